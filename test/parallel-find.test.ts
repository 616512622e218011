import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { findTakesFiles0From, parallelFind, planWalk, spareFinds, splitRecords, type Listed } from '../src/fs/parallel-find.js'
import { hasGnuFind, scanTree } from '../src/fs/tree-scan.js'
import { awkwardTree } from './helpers/tree.js'

/**
 * Several finds walking one tree must hand the build the very bytes, in the very order, that one
 * find gives: the index is compared with the scan record by record, in order, and a skipped
 * directory's entries are recognised because they follow it.
 */
const skip = !(hasGnuFind() && findTakesFiles0From()) && 'needs GNU find 4.9 (-files0-from)'
let dir: string
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'snapshot-pfind-'))
})
after(() => rmSync(dir, { recursive: true, force: true }))

function oneFind(root: string): Buffer {
  return execFileSync('find', ['.', '-mindepth', '1', '-printf', '%y %m %s %T@ %C@ %i\\0%P\\0%l\\0'], { cwd: root, env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 1 << 28 })
}

async function scanned(root: string, processes: number, opts: { spillDir?: string; slowMs?: number } = {}): Promise<{ bytes: Buffer; lines: string[]; status: number; spilling: number }> {
  const chunks: Buffer[] = []
  const lines: string[] = []
  let spilling = 0 // the most scratch files open in spillDir at a chunk
  const data = (c: Buffer): void => {
    if (opts.spillDir) spilling = Math.max(spilling, scratchFilesOpenIn(opts.spillDir))
    // A chunk is read before data() returns, and its memory may be used again afterwards: copy.
    chunks.push(Buffer.from(c))
    const until = Date.now() + (opts.slowMs ?? 0) // a build busy with each chunk: the finds get ahead
    while (Date.now() < until);
  }
  // Every find allowed at once, whatever the machine's load: the groups ahead of their turn are the point.
  const status = await parallelFind(root, processes, { data, line: (l) => lines.push(l) }, { finds: () => processes, ...(opts.spillDir ? { spillDir: opts.spillDir } : {}) })
  return { bytes: Buffer.concat(chunks), lines, status, spilling }
}

/** This process's descriptors of unlinked files in `dir` (Linux's /proc). */
function scratchFilesOpenIn(dir: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`)
      return target.startsWith(`${dir}/`) && target.endsWith(' (deleted)')
    } catch {
      return false // the descriptor readdir itself used, closed since
    }
  }).length
}

/** A tree whose top level has `tops` directories of `albums` directories of `files` files, with odd names and root files between them. */
function wideTree(root: string, tops: number, albums: number, files: number): void {
  for (let t = 0; t < tops; t++) {
    const top = join(root, t % 7 === 3 ? `-top ${t}` : `top-${t}`)
    for (let a = 0; a < albums; a++) {
      const album = join(top, a === 1 ? `(album ${a}` : `album-${a}`)
      mkdirSync(album, { recursive: true })
      for (let f = 0; f < files; f++) writeFileSync(join(album, `p${f}.m3u`), `#EXTM3U ${t}/${a}/${f}\n`)
    }
    if (t % 5 === 0) writeFileSync(join(root, `root-file-${t}`), `${t}\n`)
  }
  symlinkSync('top-0', join(root, 'link-to-top'))
  writeFileSync(Buffer.from(`${root}/name-\xff-bytes`, 'latin1'), 'x')
}

test('several finds give one find\'s bytes in its order: wide, narrow (levels opened), awkward, empty', { skip }, async () => {
  const wide = join(dir, 'wide')
  wideTree(wide, 40, 3, 5)
  const narrow = join(dir, 'narrow') // one directory on top: the walk opens levels below it
  wideTree(join(narrow, 'only'), 12, 4, 3)
  const awkward = join(dir, 'awkward')
  mkdirSync(awkward)
  awkwardTree(awkward)
  const empty = join(dir, 'empty')
  mkdirSync(empty)
  for (const root of [wide, narrow, awkward, empty]) {
    const expected = oneFind(root)
    for (const processes of [1, 2, 3, 8]) {
      const got = await scanned(root, processes)
      assert.equal(got.status, 0, root)
      assert.deepEqual(got.lines, [], root)
      assert.ok(got.bytes.equals(expected), `${root} with ${processes} finds: ${got.bytes.length} bytes against ${expected.length}`)
    }
  }
})

test('groups ahead of their turn wait in scratch files: nothing lost or reordered, nothing left behind', { skip }, async () => {
  const root = join(dir, 'held')
  wideTree(root, 30, 2, 20)
  const spill = join(dir, 'spill')
  mkdirSync(spill)
  const expected = oneFind(root)
  for (const slowMs of [0, 3]) {
    const got = await scanned(root, 3, { spillDir: spill, slowMs })
    assert.ok(got.bytes.equals(expected), `slow ${slowMs} ms: ${got.bytes.length} bytes against ${expected.length}`)
    assert.ok(got.spilling >= 1, 'groups started ahead of their turn write into scratch files')
    assert.deepEqual(readdirSync(spill), [], 'scratch files are unlinked as they are opened')
    assert.equal(scratchFilesOpenIn(spill), 0, 'and closed when passed on')
  }
})

test('the scan with several finds is the scan with one, record for record (scanTree)', { skip }, async () => {
  const root = join(dir, 'scan')
  wideTree(root, 25, 2, 4)
  const records = async (processes: number): Promise<string[]> => {
    const out: string[] = []
    await scanTree(root, (r) => out.push(r.buf.toString('latin1', r.start, r.end)), undefined, processes)
    return out
  }
  const one = await records(1)
  assert.ok(one.length > 250)
  assert.deepEqual(await records(2), one)
  assert.deepEqual(await records(4), one)
})

test('a start point gone before its find runs is a vanished entry, and the walk completes', { skip }, async () => {
  const root = join(dir, 'gone')
  wideTree(root, 20, 1, 2)
  // The top directory one find meets last: its group starts long after the first records arrive.
  const tops = splitRecords(oneFind(root)).map((l) => l.path.toString('latin1')).filter((p) => /^top-\d+$/.test(p))
  const last = tops.at(-1)!
  const vanished: string[] = []
  const out: string[] = []
  await scanTree(
    root,
    (r) => {
      if (out.length === 0) rmSync(join(root, last), { recursive: true })
      out.push(r.buf.toString('latin1', r.pathStart, r.targetStart - 1))
    },
    (path, why) => vanished.push(`${path}: ${why}`),
    2,
  )
  assert.ok(!out.some((p) => p.startsWith(`${last}/`)), 'nothing below the removed directory')
  assert.ok(out.includes(`${tops[0]}/album-0/p1.m3u`))
  assert.deepEqual(vanished, [`${last}: No such file or directory`])
})

test('the plan opens levels while directories are few, and keeps listed records in preorder', async () => {
  const rec = (path: string, isDir: boolean): Listed => {
    const record = Buffer.from(`${isDir ? 'd' : 'f'} 755 0 1.0 1.0 1\0${path}\0\0`, 'latin1')
    return splitRecords(record)[0]!
  }
  const tree: Record<string, Listed[]> = {
    '': [rec('a', true), rec('f', false)],
    a: [rec('a/x', true), rec('a/y', true), rec('a/g', false)],
    'a/x': [rec('a/x/1', true), rec('a/x/2', true)],
    'a/y': [rec('a/y/1', true)],
  }
  const pieces = await planWalk(async (d) => tree[d ? d.toString('latin1') : '']!, 1)
  const shown = pieces.map((p) => ('listed' in p ? `listed ${splitRecords(p.listed).map((l) => l.path.toString()).join(' ')}` : `find ${p.startPoints.map(String).join(' ')}`))
  // Preorder: a, a/x (listed), a/x's subtrees (a group for each: 16 groups asked of one find), a/y (listed), its subtree, a/g, f.
  assert.equal(shown.join(' | '), 'listed a a/x | find a/x/1 | find a/x/2 | listed a/y | find a/y/1 a/g f')
})

test('a second find runs only on a core the build leaves idle', () => {
  assert.equal(spareFinds(2, 0.1, 2), 2) // a build waiting on the walk
  assert.equal(spareFinds(2, 1.6, 2), 1) // a build reading and compressing as it scans
  assert.equal(spareFinds(2, 2.0, 2), 1) // never none
  assert.equal(spareFinds(8, 0.5, 4), 4) // at most what was asked
  assert.equal(spareFinds(4, 1.4, 4), 3)
})
