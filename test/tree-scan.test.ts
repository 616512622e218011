import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { statSignature } from '../src/fs/stat-signature.js'
import { hasGnuFind, RecordParser, scanTree } from '../src/fs/tree-scan.js'
import { awkwardTree } from './helpers/tree.js'

/**
 * The scan's records are a stat signature compared byte for byte with the index's, so GNU find and
 * the Node walk must print the very same bytes for the same entry: an index written after one scan
 * is read after the other (SNAPSHOT_SCAN=node, or a master without GNU find).
 */
let dir: string
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'snapshot-scan-'))
})
after(() => rmSync(dir, { recursive: true, force: true }))

async function records(root: string, scanner: 'find' | 'node'): Promise<string[]> {
  const saved = process.env.SNAPSHOT_SCAN
  process.env.SNAPSHOT_SCAN = scanner === 'node' ? 'node' : 'auto'
  try {
    const out: string[] = []
    await scanTree(root, (r) => out.push(r.buf.toString('latin1', r.start, r.end)))
    return out
  } finally {
    if (saved === undefined) delete process.env.SNAPSHOT_SCAN
    else process.env.SNAPSHOT_SCAN = saved
  }
}

/** Everything whose bytes could differ: modes with setuid and sticky bits, times before 1970 and
 * far ahead, whole seconds, symlinks (dangling too), a fifo, names that are not UTF-8. */
function oddTree(root: string): void {
  awkwardTree(root)
  const at = (p: string) => join(root, p)
  writeFileSync(at('setuid'), 'x')
  chmodSync(at('setuid'), 0o4755)
  mkdirSync(at('sticky'))
  chmodSync(at('sticky'), 0o1777)
  writeFileSync(at('old'), 'old')
  utimesSync(at('old'), new Date(-305128799500), new Date(-305128799500)) // 1960, half a second
  writeFileSync(at('future'), 'future')
  utimesSync(at('future'), new Date('2300-01-01T00:00:00Z'), new Date('2300-01-01T00:00:00Z'))
  writeFileSync(at('epoch'), '')
  utimesSync(at('epoch'), 0, 0)
  symlinkSync('../nowhere', at('sticky/dangling'))
  execFileSync('mkfifo', [at('fifo')])
  writeFileSync(Buffer.from(`${root}/bad\xffname`, 'latin1'), 'x')
  symlinkSync(Buffer.from('target\xfe', 'latin1'), Buffer.from(`${root}/badlink`, 'latin1'))
}

test('GNU find and the Node walk give the same records, byte for byte', { skip: !hasGnuFind() && 'no GNU find' }, async () => {
  const root = join(dir, 'odd')
  mkdirSync(root)
  oddTree(root)
  const byFind = await records(root, 'find')
  const byNode = await records(root, 'node')
  assert.ok(byFind.length > 40)
  assert.deepEqual([...byNode].sort(), [...byFind].sort())
  // Preorder: a directory comes before what it holds, in both.
  for (const list of [byFind, byNode]) {
    const seen = new Set<string>()
    for (const r of list) {
      const path = r.split('\0')[1]!
      const parent = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : ''
      assert.ok(parent === '' || seen.has(parent), `${path} before its directory`)
      seen.add(path)
    }
  }
})

test("statSignature of an lstat is the scan's SIG (what the source reader compares after a read)", async () => {
  const root = join(dir, 'sig')
  mkdirSync(root)
  oddTree(root)
  for (const r of await records(root, hasGnuFind() ? 'find' : 'node')) {
    const [sig, path] = r.split('\0')
    assert.equal(statSignature(lstatSync(Buffer.from(`${root}/${path}`, 'latin1'), { bigint: true })), sig, path)
  }
})

test('records cut anywhere by the pipe come out whole', () => {
  const records = ['f 644 3 1.0000000000 1.0000000000 1\0a\0\0', 'l 777 1 1.0000000000 1.0000000000 2\0b/l\0a\0', `d 755 4096 1.0000000000 1.0000000000 3\0${'long/'.repeat(900)}x\0\0`]
  const stream = Buffer.from(records.join(''), 'latin1')
  const parse = (chunks: Buffer[]): string[] => {
    const out: string[] = []
    const parser = new RecordParser((r) => out.push(r.buf.toString('latin1', r.start, r.end)))
    for (const c of chunks) parser.push(c)
    assert.ok(parser.finished())
    return out
  }
  for (let cut = 0; cut <= stream.length; cut++) {
    for (const second of [cut, Math.min(stream.length, cut + 7), Math.min(stream.length, cut + 4096)]) {
      assert.deepEqual(parse([stream.subarray(0, cut), stream.subarray(cut, second), stream.subarray(second)]), records, `cut at ${cut} and ${second}`)
    }
  }
  assert.deepEqual(parse([...stream].map((b) => Buffer.from([b]))), records)
  const unfinished = new RecordParser(() => undefined)
  unfinished.push(stream.subarray(0, 20))
  assert.equal(unfinished.finished(), false)
})
