import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { hasGnuFind, RawScanRecord } from '../src/fs/tree-scan.js'
import { readIntoIndex, scanMetadata, type MetadataScan } from '../src/master/build-scan.js'
import { EarlyReads } from '../src/master/early-reads.js'
import { racySig } from '../src/fs/stat-signature.js'
import { encodeIndexHeader, entryFromIndex, indexValue, rowBytes, writeRow } from '../src/master/index-row.js'
import { IndexVersionError } from '../src/core/errors.js'
import { homeSlot, IndexRows, readIndex, tableSize } from '../src/master/index-rows.js'
import { IndexSlot, MasterIndex } from '../src/master/master-index.js'
import { SourceReader } from '../src/master/source-reader.js'
import { Rng } from '../scripts/corpus.js'
import { runCli, runJson } from './helpers/cli.js'
import { writeTree } from './helpers/tree.js'

/**
 * The master's index: rows in scan order, compared byte for byte with the next scan's records, and
 * looked up by path only when the order moved. Whatever the order, the outcome must be the one a
 * plain map from path to value would give.
 */
let dir: string
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'snapshot-index-'))
})
after(() => rmSync(dir, { recursive: true, force: true }))

interface Rec {
  sig: string
  path: string
  target: string
}

function raw(r: Rec): RawScanRecord {
  const sig = Buffer.from(r.sig, 'latin1')
  const path = Buffer.from(r.path, 'latin1') // paths are byte strings (src/core/byte-path.ts)
  const target = Buffer.from(r.target, 'latin1')
  const x = new RawScanRecord()
  x.buf = Buffer.concat([Buffer.from('junk'), sig, Buffer.from([0]), path, Buffer.from([0]), target, Buffer.from([0])]) // not at offset 0
  x.start = 4
  x.pathStart = 4 + sig.length + 1
  x.targetStart = x.pathStart + path.length + 1
  x.end = x.targetStart + target.length + 1
  return x
}

const hashOf = (path: string): string => Buffer.from(path.padEnd(32, '#').slice(0, 32)).toString('hex').slice(0, 64).padEnd(64, '0')
const payloadOf = (r: Rec): string => (r.sig[0] === 'f' ? hashOf(r.path) : r.target)
const valueOf = (r: Rec): string => indexValue(r.sig, payloadOf(r))

/** The scan's use of the index (build-scan.ts), without the disk: which records were unchanged. */
function scanRecords(previous: IndexRows, recs: Rec[]): { index: MasterIndex; carried: string[]; taken: Map<string, string | undefined>; deleted: string[] } {
  const index = new MasterIndex(previous)
  const carried: string[] = []
  const taken = new Map<string, string | undefined>()
  for (const r of recs) {
    const x = raw(r)
    if (index.carryNextIfSame(x)) {
      carried.push(r.path)
      continue
    }
    const row = index.take(x)
    if (row >= 0 && index.isRecord(row, x)) {
      index.carry(row)
      carried.push(r.path)
      continue
    }
    taken.set(r.path, row >= 0 ? index.previousValue(row) : undefined)
    index.add(new IndexSlot(r.path, r.sig, payloadOf(r)))
  }
  return { index, carried, taken, deleted: index.finish().map(([p]) => p) }
}

async function roundTrip(index: MasterIndex, name: string): Promise<IndexRows> {
  const file = join(dir, name)
  await index.write(file, 7)
  return readIndex(file)
}

function makeRecs(n: number, rng: Rng): Rec[] {
  const recs: Rec[] = []
  for (let i = 0; i < n; i++) {
    const kind = rng.float() < 0.1 ? 'd' : rng.float() < 0.05 ? 'l' : 'f'
    const path = `dir-${i % 17}/${kind}-${i}${i % 5 === 0 ? '-ünï' : ''}`
    recs.push({ sig: `${kind} 644 ${100 + i} 1795257700.${i}0 1795257700.${i}0 ${1000 + i}`, path, target: kind === 'l' ? `../t-${i}` : '' })
  }
  return recs
}

test('an index read back carries every unchanged record, in any order, and finds every change', async () => {
  const rng = new Rng('master-index')
  for (let round = 0; round < 12; round++) {
    const first = makeRecs(200 + Math.floor(rng.float() * 300), rng)
    const built = scanRecords(IndexRows.empty(), first)
    assert.deepEqual(built.carried, [])
    const rows = await roundTrip(built.index, `round-${round}.bin`)
    assert.equal(rows.length, first.length)
    assert.deepEqual([...rows.entries()], first.map((r) => [r.path, valueOf(r)]))

    // The next scan: some records changed, some gone, some new, and the order shuffled in places
    // (a whole block reversed, a few moved far), as when a directory is rehashed or the scanner changes.
    let next = first.filter(() => rng.float() > 0.05)
    next = next.map((r) => (rng.float() < 0.1 ? { ...r, sig: r.sig.replace(/ (\d+)$/, (_, ino: string) => ` ${Number(ino) + 1}`) } : r))
    for (let i = 0; i < 20; i++) next.splice(Math.floor(rng.float() * next.length), 0, { sig: `f 600 9 1.0000000000 1.0000000000 ${round}${i}`, path: `new-${round}-${i}`, target: '' })
    for (let i = 0; i < 10; i++) {
      // A new path that is a prefix of the next one, or extends the one before: not the same path.
      const at = 1 + Math.floor(rng.float() * (next.length - 1))
      const path = i % 2 ? `${next[at - 1]!.path}0` : next[at]!.path.slice(0, -1)
      if (!next.some((r) => r.path === path) && !first.some((r) => r.path === path)) next.splice(at, 0, { sig: `f 600 9 1.0000000000 1.0000000000 ${i}`, path, target: '' })
    }
    const a = Math.floor(rng.float() * next.length)
    const b = Math.min(next.length, a + 40)
    next = [...next.slice(0, a), ...next.slice(a, b).reverse(), ...next.slice(b)]
    for (let i = 0; i < 5; i++) {
      const [moved] = next.splice(Math.floor(rng.float() * next.length), 1)
      next.splice(Math.floor(rng.float() * next.length), 0, moved!)
    }

    const firstByPath = new Map(first.map((r) => [r.path, r]))
    const scan = scanRecords(rows, next)
    const expectCarried = next.filter((r) => { const p = firstByPath.get(r.path); return p !== undefined && p.sig === r.sig && p.target === r.target }).map((r) => r.path)
    assert.deepEqual(scan.carried, expectCarried, `round ${round}`)
    assert.deepEqual([...scan.taken.keys()].sort(), next.filter((r) => !expectCarried.includes(r.path)).map((r) => r.path).sort())
    for (const [path, before] of scan.taken) assert.equal(before, firstByPath.has(path) ? valueOf(firstByPath.get(path)!) : undefined)
    const nextPaths = new Set(next.map((r) => r.path))
    assert.deepEqual(scan.deleted.sort(), first.filter((r) => !nextPaths.has(r.path)).map((r) => r.path).sort())
    // The scan is over: its path lookups are gone with their tables (index-rows.ts endScan), rows by number still read.
    assert.throws(() => rows.find(raw(next[0]!)), /looked up by path after the scan/)
    assert.equal(rows.length, first.length)
    assert.deepEqual([...rows.entries()], first.map((r) => [r.path, valueOf(r)]))

    // The next index holds the next scan's entries, in its order, and the tree's counts.
    const again = await roundTrip(scan.index, `round-${round}-next.bin`)
    assert.deepEqual([...again.entries()], next.map((r) => [r.path, valueOf(r)]))
    const files = next.filter((r) => r.sig[0] === 'f')
    assert.deepEqual(again.counts, {
      files: files.length,
      dirs: next.filter((r) => r.sig[0] === 'd').length,
      links: next.filter((r) => r.sig[0] === 'l').length,
      bytes: files.reduce((n, r) => n + Number(r.sig.split(' ')[2]), 0),
    })
    assert.deepEqual(again.counts, scan.index.counts())
    // Read back once more, unchanged: every record is the next row, and the file is the same bytes.
    const steady = scanRecords(again, next)
    assert.equal(steady.carried.length, next.length)
    await roundTrip(steady.index, `round-${round}-steady.bin`)
    assert.ok(readFileSync(join(dir, `round-${round}-steady.bin`)).equals(readFileSync(join(dir, `round-${round}-next.bin`))))
  }
})

/** What an index of these records must be, byte for byte: the header, then each record's row in order. */
function expectedIndexBytes(id: number, recs: Rec[]): Buffer {
  const files = recs.filter((r) => r.sig[0] === 'f')
  const counts = { files: files.length, dirs: recs.filter((r) => r.sig[0] === 'd').length, links: recs.filter((r) => r.sig[0] === 'l').length, bytes: files.reduce((n, r) => n + Number(r.sig.split(' ')[2]), 0) }
  const rows = recs.map((r) => {
    const b = Buffer.alloc(rowBytes(r.path, r.sig, payloadOf(r)))
    return b.subarray(0, writeRow(b, 0, r.path, r.sig, payloadOf(r)))
  })
  return Buffer.concat([Buffer.from(encodeIndexHeader(id, counts), 'latin1'), ...rows])
}

test('an index many times the read window: the next index is, byte for byte, the rows of the next scan', async () => {
  // ~100 bytes a row: ~5 MiB, read through windows of 1 MiB (scan order) and 4 KiB (out of order).
  const rng = new Rng('big-index')
  const first = makeRecs(50_000, rng)
  const built = scanRecords(IndexRows.empty(), first)
  await built.index.write(join(dir, 'big-1.bin'), 7)
  assert.ok(readFileSync(join(dir, 'big-1.bin')).equals(expectedIndexBytes(7, first)))
  const rows = await readIndex(join(dir, 'big-1.bin'))
  try {
    // An hour: 10% changed, 2% gone, 2% new, a block longer than a window reversed (a directory
    // rehashed), a few records moved far in both directions.
    let next = first.filter(() => rng.float() > 0.02)
    next = next.map((r) => (rng.float() < 0.1 ? { ...r, sig: r.sig.replace(/ (\d+)$/, (_, ino: string) => ` ${Number(ino) + 7}`) } : r))
    for (let i = 0; i < 1000; i++) next.splice(Math.floor(rng.float() * next.length), 0, { sig: `f 600 9 1.0000000000 1.0000000000 ${i}`, path: `new/${i}`, target: '' })
    const a = Math.floor(next.length / 3)
    next = [...next.slice(0, a), ...next.slice(a, a + 15_000).reverse(), ...next.slice(a + 15_000)]
    for (let i = 0; i < 50; i++) {
      const [moved] = next.splice(Math.floor(rng.float() * next.length), 1)
      next.splice(Math.floor(rng.float() * next.length), 0, moved!)
    }
    const scan = scanRecords(rows, next)
    const firstByPath = new Map(first.map((r) => [r.path, r]))
    for (const [path, before] of scan.taken) assert.equal(before, firstByPath.has(path) ? valueOf(firstByPath.get(path)!) : undefined)
    assert.equal(scan.carried.length + scan.taken.size, next.length)
    const nextPaths = new Set(next.map((r) => r.path))
    assert.deepEqual(scan.deleted.sort(), first.filter((r) => !nextPaths.has(r.path)).map((r) => r.path).sort())
    await scan.index.write(join(dir, 'big-2.bin'), 8)
    assert.ok(readFileSync(join(dir, 'big-2.bin')).equals(expectedIndexBytes(8, next)), 'the next index is the next scan\'s rows')
    // The same file when the previous index is held whole (a full build's way: entryList).
    const again = await readIndex(join(dir, 'big-1.bin'))
    try {
      const whole = scanRecords(again, next)
      assert.equal(whole.index.entryList().length, next.length)
      await whole.index.write(join(dir, 'big-2-whole.bin'), 8)
      assert.ok(readFileSync(join(dir, 'big-2-whole.bin')).equals(readFileSync(join(dir, 'big-2.bin'))))
    } finally {
      again.close()
    }
  } finally {
    rows.close()
  }
})

test('files read during the scan come back byte for byte, in any order, larger than a buffer too', () => {
  const rng = new Rng('early-reads')
  const early = new EarlyReads(dir)
  const kept: [number, Buffer][] = []
  for (let i = 0; i < 3000; i++) {
    const data = Buffer.alloc(i === 1500 ? 3 << 20 : Math.floor(rng.float() * 1000), i % 251)
    data[0] = i & 0xff
    kept.push([early.keep(data), data])
  }
  assert.equal(early.bytes, kept.reduce((n, [, d]) => n + d.length, 0))
  for (let i = kept.length - 1; i > 0; i--) {
    const j = Math.floor(rng.float() * (i + 1))
    ;[kept[i], kept[j]] = [kept[j]!, kept[i]!]
  }
  for (const [address, data] of kept) assert.ok(early.take(address).equals(data))
  for (const [address, data] of kept.slice(0, 50)) assert.ok(early.take(address).equals(data), 'taken again')
  // They wait in a file of the store's, unlinked as soon as it is opened: nothing to leave behind.
  assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.early-reads.')), [])
  early.close()
})

test('index values: entries, racy signatures, links with any target', () => {
  const f = indexValue('f 4755 213 1795257700.6313518810 1795257700.6313518820 9', 'ab'.repeat(32))
  assert.deepEqual(entryFromIndex('a', f), { type: 'f', path: 'a', mode: 0o755, size: 213, mtime: '1795257700.631351000', sha256: 'ab'.repeat(32) }) // to the microsecond: core/mtime.ts
  const racy = indexValue(racySig('f 4755 213 1795257700.6313518810 1795257700.6313518820 9'), 'ab'.repeat(32))
  assert.equal(racy, indexValue('f 4755 213 1795257700.6313518810 racy', 'ab'.repeat(32)), 'a racy signature keeps the mtime')
  assert.deepEqual(entryFromIndex('a', racy), entryFromIndex('a', f))
  assert.deepEqual(entryFromIndex('l', indexValue('l 777 5 1.0000000000 1.0000000000 9', '/abs\tb c')), { type: 'l', path: 'l', target: '/abs\tb c', mtime: '1.000000000' })
  assert.deepEqual(entryFromIndex('d', indexValue('d 1777 4096 1.5000000000 1.0000000000 9', '')), { type: 'd', path: 'd', mode: 0o1777, mtime: '1.500000000' })
})

test('a truncated index is refused; an index of another version says so', async () => {
  const built = scanRecords(IndexRows.empty(), makeRecs(50, new Rng('trunc')))
  const file = join(dir, 'whole.bin')
  await built.index.write(file, 3)
  const bytes = readFileSync(file)
  writeFileSync(join(dir, 'cut.bin'), bytes.subarray(0, bytes.length - 5))
  await assert.rejects(readIndex(join(dir, 'cut.bin')), /truncated or damaged/)
  writeFileSync(join(dir, 'v1.bin'), 'playlist-snapshot-index/1 3 1\na\0f644 1 2 3 4\tx\0')
  await assert.rejects(readIndex(join(dir, 'v1.bin')), (err) => err instanceof IndexVersionError && /format 1/.test(err.message))
  writeFileSync(join(dir, 'other.bin'), 'hello\n')
  await assert.rejects(readIndex(join(dir, 'other.bin')), /not a snapshot index/)
})

/** A build's scan and reads, in process: the index it leaves, and what it found. */
async function scanAndRead(source: string, previous: IndexRows, scanner: 'find' | 'node'): Promise<MetadataScan> {
  const saved = process.env.SNAPSHOT_SCAN
  process.env.SNAPSHOT_SCAN = scanner === 'node' ? 'node' : 'auto'
  try {
    const scan = await scanMetadata(source, previous)
    const reader = new SourceReader(source)
    for (let k = 0; k < scan.toRead.length; k++) readIntoIndex(reader, k, scan)
    return scan
  } finally {
    if (saved === undefined) delete process.env.SNAPSHOT_SCAN
    else process.env.SNAPSHOT_SCAN = saved
  }
}

test('an index written after a find scan is read after a Node walk, and the other way round', { skip: !hasGnuFind() && 'no GNU find' }, async () => {
  const source = join(dir, 'tree')
  const tree: Record<string, string | { link: string } | { dir: true }> = { 'empty': { dir: true }, 'l': { link: 'a/0.m3u' } }
  for (let i = 0; i < 300; i++) tree[`${'abcdefg'[i % 7]}/${i}.m3u`] = `#EXTM3U ${i}\n`
  writeTree(source, tree)
  await sleep(2100) // past the racy window: fresh files would be read again
  let rows = IndexRows.empty()
  let scan = await scanAndRead(source, rows, 'find')
  assert.equal(scan.toRead.length, 300)
  for (const scanner of ['node', 'find', 'node'] as const) {
    rows = await roundTrip(scan.index, `tree-${scanner}.bin`)
    scan = await scanAndRead(source, rows, scanner)
    assert.deepEqual([scan.toRead.length, scan.changed.size, scan.deleted.length], [0, 0, 0], `after a switch to ${scanner}`)
  }

  // Changes are found whichever scanner wrote the index.
  writeFileSync(join(source, 'a/0.m3u'), 'changed\n')
  unlinkSync(join(source, 'b/1.m3u'))
  renameSync(join(source, 'c/2.m3u'), join(source, 'c/2-renamed.m3u'))
  writeTree(source, { 'new/x.m3u': 'x\n', 'l2': { link: 'empty' } })
  rmSync(join(source, 'l'))
  symlinkSync('b/8.m3u', join(source, 'l'))
  rows = await roundTrip(scan.index, 'tree-before-changes.bin')
  scan = await scanAndRead(source, rows, 'find')
  assert.deepEqual([...scan.toRead.pathOrder()].map((k) => scan.toRead.path(k)), ['a/0.m3u', 'c/2-renamed.m3u', 'new/x.m3u'])
  assert.deepEqual(scan.deleted.sort(), ['b/1.m3u', 'c/2.m3u'])
  // Directories whose entries came or went changed too: their mtimes moved.
  assert.deepEqual([...scan.changed.keys()].sort(), ['b', 'c', 'l', 'l2', 'new'])
  assert.deepEqual(scan.index.counts(), { files: 300, dirs: 9, links: 2, bytes: rows.counts.bytes - '#EXTM3U 0\n'.length + 'changed\n'.length - '#EXTM3U 1\n'.length + 'x\n'.length })
})

test('a build over an index of an older version logs it and reads the whole tree', async () => {
  const source = join(dir, 'upgrade')
  const store = join(dir, 'upgrade-store')
  mkdirSync(store)
  writeTree(source, { 'a.m3u': 'a\n', 'b/c.m3u': 'c\n' })
  const first = await runJson<{ id: number }>(['build', '--source', source, '--store', store])
  writeFileSync(join(store, '.state', `index-${first.id}.bin`), `playlist-snapshot-index/1 ${first.id} 0\n`)
  writeFileSync(join(source, 'a.m3u'), 'changed\n')
  const r = await runCli(['build', '--source', source, '--store', store, '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stderr, /index format 1, this version reads 3: reading the whole tree/)
  assert.equal((JSON.parse(r.stdout) as { filesRead: number }).filesRead, 2)
})

test('the path lookup table: 1.5 slots a row at least, and every hash lands in it', () => {
  for (const rows of [0, 1, 10, 1000, 1_010_091, 1_048_577, 10_000_000]) {
    const size = tableSize(rows)
    assert.ok(size >= 1.5 * rows && size >= 16, `${rows} rows: ${size} slots`)
    for (const h of [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff]) {
      const slot = homeSlot(h, size)
      assert.ok(Number.isInteger(slot) && slot >= 0 && slot < size, `hash ${h} in ${size} slots: ${slot}`)
    }
  }
})
