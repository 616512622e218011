import assert from 'node:assert/strict'
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { sha256Hex } from '../src/core/sha256.js'
import { statSignature } from '../src/fs/stat-signature.js'
import { scanWholeTree } from '../src/master/build-scan.js'
import { writeFirstFull } from '../src/master/full-archive.js'
import { encodeReadList, NOT_READ, readBatch } from '../src/master/read-batch.js'
import { ReadAhead, type ReadJob } from '../src/master/read-ahead.js'
import { SourceReader } from '../src/master/source-reader.js'
import { buildSnapshot } from '../src/master/build.js'
import { entryFromIndex } from '../src/master/index-row.js'
import { readIndex } from '../src/master/index-rows.js'

/**
 * Reader threads read a build's small files ahead of the packing. Whatever they read must be what
 * the build's own thread would have read: the same bytes, hash and signature, and every file they
 * cannot prove unchanged since the scan left to the careful read that says what became of it.
 */
const dir = mkdtempSync(join(tmpdir(), 'read-ahead-'))
after(() => rmSync(dir, { recursive: true, force: true }))

const sigOf = (root: string, path: string): string => statSignature(lstatSync(Buffer.from(`${root}/${path}`, 'latin1'), { bigint: true }))

test('a batch read on a thread gives each file unchanged since the scan, and leaves the rest unread', () => {
  const root = join(dir, 'batch')
  mkdirSync(root)
  writeFileSync(join(root, 'a.m3u'), 'first\n')
  writeFileSync(join(root, 'b.m3u'), 'second\n')
  writeFileSync(join(root, 'c.m3u'), 'third\n')
  writeFileSync(Buffer.from(`${root}/n\xff.m3u`, 'latin1'), 'odd name\n')
  const paths = ['a.m3u', 'b.m3u', 'c.m3u', 'gone.m3u', 'n\xff.m3u']
  const sigs = paths.map((p) => (p === 'gone.m3u' ? 'f 644 3 1.0000000000 1.0000000000 1' : sigOf(root, p)))
  writeFileSync(join(root, 'b.m3u'), 'second, rewritten after the scan\n')
  const r = readBatch({ root, list: encodeReadList(paths, sigs), count: paths.length, noAtime: 0 })
  const bytes = Buffer.from(r.bytes)
  assert.deepEqual([...r.ends], [6, NOT_READ, 12, NOT_READ, 21])
  assert.equal(bytes.toString('latin1', 0, 6), 'first\n')
  assert.equal(bytes.toString('latin1', 6, 12), 'third\n')
  assert.equal(bytes.toString('latin1', 12, 21), 'odd name\n')
  assert.equal(Buffer.from(r.sha256).toString('hex', 64, 96), sha256Hex(Buffer.from('third\n')))
})

/** A tree with what a build meets: small files, one too large for a batch, odd names, files that move after the scan. */
function makeTree(name: string): string {
  const root = join(dir, name)
  for (let d = 0; d < 6; d++) {
    mkdirSync(join(root, `d${d}`), { recursive: true })
    for (let i = 0; i < 150; i++) writeFileSync(join(root, `d${d}`, `p${i}.m3u`), `#EXTM3U\n${name}-${d}-${i}.mp3\n`)
  }
  writeFileSync(join(root, 'd2', 'large.bin'), Buffer.alloc(300 << 10, `${name}: too large for a batch\n`))
  writeFileSync(Buffer.from(`${root}/d3/n\xfe.m3u`, 'latin1'), 'not utf-8\n')
  return root
}

test('a full build reads the same with reader threads as without: the same objects, index and digest', async () => {
  const results: { archive: string; manifest: string; digest: string; index: string[]; warnings: string[] }[] = []
  for (const threads of [0, 3]) {
    // The same names, contents and times each round. Every file was just written (its ctime is
    // recent), so every row is racy: it keeps type, mode, size and mtime, not ctime or inode.
    const root = makeTree('same')
    for (const p of [...statPaths(root), 'd0', 'd1', 'd2', 'd3', 'd4', 'd5']) setTimes(root, p)
    const scan = await scanWholeTree(root)
    // Moved after the scan: a file rewritten, one deleted, one replaced by a directory.
    writeFileSync(join(root, 'd1', 'p7.m3u'), 'rewritten after the scan, longer\n')
    unlinkSync(join(root, 'd4', 'p9.m3u'))
    unlinkSync(join(root, 'd5', 'p3.m3u'))
    mkdirSync(join(root, 'd5', 'p3.m3u'))
    setTimes(root, 'd1/p7.m3u')
    const objects = join(dir, `objects-${threads}`)
    mkdirSync(objects)
    const reader = new SourceReader(root)
    const { pair, digest } = await writeFirstFull(objects, 1, { mode: 0o755, mtime: '1700000000.000000000' }, scan, reader, threads)
    assert.equal(reader.filesRead, 6 * 150 + 2, 'every file counted once')
    const indexFile = join(dir, `index-${threads}`)
    await scan.index.write(indexFile, 1)
    // Rows as entries, and whether each is marked to be read again (directories' rows keep their inodes).
    const rows = [...(await readIndex(indexFile)).entries()].map(([path, value]) => `${JSON.stringify(entryFromIndex(path, value))} ${value.includes(' racy') ? 'racy' : ''}`)
    results.push({ archive: pair.archive.sha256, manifest: pair.manifest.sha256, digest: digest.toHex(), index: rows, warnings: scan.warnings })
    scan.index.close()
    rmSync(root, { recursive: true })
  }
  assert.equal(results[1]!.archive, results[0]!.archive)
  assert.equal(results[1]!.manifest, results[0]!.manifest)
  assert.equal(results[1]!.digest, results[0]!.digest)
  assert.deepEqual(results[1]!.index, results[0]!.index, 'the index, row for row')
  assert.equal(results[0]!.index.length, 6 + 6 * 150 + 2 - 2)
  assert.deepEqual(results[1]!.warnings, results[0]!.warnings)
  assert.equal(results[0]!.warnings.length, 2, 'the file deleted and the one turned into a directory are said')
})

test('a caller that skips files it named, or reads one it did not name, still gets the right bytes', async () => {
  const root = makeTree('skips')
  const paths = statPaths(root).filter((p) => p.endsWith('.m3u')).sort()
  const jobs: ReadJob[] = paths.map((path) => ({ path, sig: sigOf(root, path) }))
  let i = 0
  const ahead = new ReadAhead(new SourceReader(root), () => jobs[i++] ?? null, { threads: 2 })
  try {
    for (const [n, job] of jobs.entries()) {
      if (n % 7 === 3) continue // named, never read
      await ahead.arrive(job.path)
      const r = ahead.read(job.path, job.sig)
      assert.ok('data' in r, job.path)
      assert.ok(r.data.equals(readFileSync(Buffer.from(`${root}/${job.path}`, 'latin1'))), job.path)
      assert.equal(r.sha256 ?? sha256Hex(r.data), sha256Hex(r.data))
    }
    assert.ok(ahead.readOnThreads > 700, `${ahead.readOnThreads} files came from the threads`)
    const large = ahead.read('d2/large.bin', sigOf(root, 'd2/large.bin')) // never named: the reader's own read
    assert.ok('data' in large && large.data.length === 300 << 10)
  } finally {
    await ahead.close()
  }
})

test('no thread starts while there is nothing to read (a delta build whose files were all read during its scan)', async () => {
  const root = makeTree('nothing')
  const ahead = new ReadAhead(new SourceReader(root), () => null, { threads: 2 })
  try {
    await ahead.arrive('d0/p0.m3u')
    const r = ahead.read('d0/p0.m3u', sigOf(root, 'd0/p0.m3u'))
    assert.ok('data' in r && r.data.toString() === '#EXTM3U\nnothing-0-0.mp3\n')
    assert.equal(ahead.threadsStarted, 0)
  } finally {
    await ahead.close()
  }
})

function statPaths(root: string): string[] {
  const out: string[] = []
  for (let d = 0; d < 6; d++) for (const name of readdirSync(join(root, `d${d}`), { encoding: 'buffer' })) out.push(`d${d}/${name.toString('latin1')}`)
  return out
}

/** One time for every file and directory: both rounds' trees then differ only in inodes and ctimes. */
function setTimes(root: string, path: string): void {
  utimesSync(Buffer.from(path ? `${root}/${path}` : root, 'latin1'), 1_700_000_000, 1_700_000_000)
}

test('a delta build whose files are past the scan\'s early reads packs the same with reader threads as without', async () => {
  const source = join(dir, 'delta-source')
  mkdirSync(source)
  for (let i = 0; i < 40; i++) writeFileSync(join(source, `big${i}.bin`), Buffer.alloc(100 << 10, `first ${i}\n`)) // too large to be read during the scan
  for (let i = 0; i < 200; i++) writeFileSync(join(source, `p${i}.m3u`), `#EXTM3U\nfirst-${i}.mp3\n`)
  const stores = [join(dir, 'delta-store-0'), join(dir, 'delta-store-2')]
  const build = (store: string, readerThreads: number): ReturnType<typeof buildSnapshot> =>
    buildSnapshot({ source, store, privateKey: null, forceFull: false, policy: { deltaBytesRatio: 10, maxChain: 100 }, readerThreads })
  for (const [n, store] of stores.entries()) await build(store, n * 2)
  for (let i = 0; i < 40; i += 2) writeFileSync(join(source, `big${i}.bin`), Buffer.alloc(100 << 10, `second ${i}\n`))
  for (let i = 0; i < 200; i += 3) writeFileSync(join(source, `p${i}.m3u`), `#EXTM3U\nsecond-${i}.mp3\n`)
  const deltas = []
  for (const [n, store] of stores.entries()) {
    const r = await build(store, n * 2)
    assert.equal(r.kind, 'delta')
    assert.equal(r.changed, 20 + 67)
    deltas.push(JSON.parse(JSON.parse(readFileSync(join(store, 'snapshots', '2.json'), 'utf8')).signed).snapshot.delta)
  }
  assert.match(JSON.stringify(deltas[0]), /"archive":\{.*"sha256":"[0-9a-f]{64}"/)
  assert.deepEqual(deltas[1], deltas[0], 'the same delta archive and manifest, byte for byte')
})
