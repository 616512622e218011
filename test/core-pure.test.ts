import assert from 'node:assert/strict'
import { test } from 'node:test'
import { planPull } from '../src/core/chain-plan.js'
import { decideFull, DEFAULT_FULL_POLICY } from '../src/core/full-policy.js'
import { encodeDeletionLine, encodeEntryLine, encodeHeaderLine, MANIFEST_FORMAT, parseBodyLine } from '../src/core/manifest.js'
import type { ArchivePair, SnapshotRecord } from '../src/core/snapshot-record.js'
import { digestOf, TreeDigest } from '../src/core/tree-digest.js'
import type { ManifestEntry, TreeEntry } from '../src/core/tree-entry.js'
import { linkTargetProblem, pathProblem } from '../src/core/tree-path.js'
import { ManifestCursor } from '../src/restore/manifest-cursor.js'

const MT = '1700000000.123456789'

const sha = (c: string): string => c.repeat(64).slice(0, 64)
function pair(tag: string, length: number): ArchivePair {
  return {
    archive: { path: `objects/${sha(tag)}.tar.zst`, sha256: sha(tag), length, tarBytes: 1024 },
    manifest: { path: `objects/${sha(tag + 'm')}.manifest.zst`, sha256: sha(tag + 'm'), length: 0 },
    entries: 1,
    deleted: 0,
  }
}
function rec(id: number, opts: { delta?: number; full?: number }): SnapshotRecord {
  return {
    id,
    parent: id === 1 ? null : id - 1,
    created: new Date(0).toISOString(),
    kind: opts.full !== undefined ? 'full' : 'delta',
    treeDigest: sha('0'),
    files: 0,
    dirs: 0,
    links: 0,
    bytes: 0,
    ...(opts.delta !== undefined ? { delta: pair(String.fromCharCode(96 + id), opts.delta) } : {}),
    ...(opts.full !== undefined ? { full: pair(String(id % 10), opts.full) } : {}),
  }
}

test('planPull takes the delta chain when it is cheaper than the full', () => {
  const records = new Map([1, 2, 3, 4].map((id) => [id, id === 1 ? rec(1, { full: 1000 }) : rec(id, { delta: 10 })]))
  const plan = planPull({ baseId: 2, latestId: 4, records, cached: () => false })
  assert.deepEqual(plan.steps.map((s) => [s.record.id, s.use]), [[3, 'delta'], [4, 'delta']])
  assert.equal(plan.downloadBytes, 20)
  assert.equal(plan.baseId, 2)
})

test('planPull takes the full when the chain costs more, or is broken', () => {
  const records = new Map<number, SnapshotRecord>([
    [1, rec(1, { full: 100 })],
    [2, rec(2, { delta: 80 })],
    [3, rec(3, { delta: 80, full: 100 })],
    [4, rec(4, { delta: 5 })],
  ])
  const plan = planPull({ baseId: 1, latestId: 4, records, cached: () => false })
  assert.deepEqual(plan.steps.map((s) => [s.record.id, s.use]), [[3, 'full'], [4, 'delta']])
  assert.equal(plan.baseId, null)
  records.delete(2)
  const broken = planPull({ baseId: 1, latestId: 4, records, cached: () => false })
  assert.equal(broken.steps[0]!.use, 'full')
})

test('planPull counts cached objects as free, and starts an empty tree from a full', () => {
  const records = new Map<number, SnapshotRecord>([
    [1, rec(1, { full: 100 })],
    [2, rec(2, { delta: 90 })],
    [3, rec(3, { delta: 20 })],
  ])
  const cachedDelta2 = (s: string): boolean => s === records.get(2)!.delta!.archive.sha256
  assert.equal(planPull({ baseId: 1, latestId: 3, records, cached: cachedDelta2 }).downloadBytes, 20)
  const empty = planPull({ baseId: null, latestId: 3, records, cached: () => false })
  assert.deepEqual(empty.steps.map((s) => [s.record.id, s.use]), [[1, 'full'], [2, 'delta'], [3, 'delta']])
  assert.throws(() => planPull({ baseId: null, latestId: 3, records: new Map([[3, rec(3, { delta: 1 })]]), cached: () => false }), /cannot reach/)
})

test('the tree digest is order-free and follows adds and removes', () => {
  const a: TreeEntry = { type: 'f', path: 'a', mode: 0o644, size: 1, mtime: MT, sha256: sha('1') }
  const b: TreeEntry = { type: 'd', path: 'b', mode: 0o755, mtime: MT }
  const c: TreeEntry = { type: 'l', path: 'c', target: 'a', mtime: MT }
  const root = { mode: 0o755, mtime: MT }
  assert.equal(digestOf([a, b, c], root), digestOf([c, a, b], root))
  const d = TreeDigest.fromHex(digestOf([a, b], root))
  d.add(c)
  d.remove(a)
  assert.equal(d.toHex(), digestOf([b, c], root))
  assert.notEqual(digestOf([a], root), digestOf([{ ...a, mode: 0o600 }], root))
  assert.notEqual(digestOf([a], root), digestOf([{ ...a, mtime: '1700000000.000000001' }], root), 'an mtime is part of the tree')
  assert.notEqual(digestOf([a], root), digestOf([a], { ...root, mode: 0o750 }), "so is the root's mode")
  const nonUtf8 = Buffer.from([0x66, 0xff]).toString('latin1')
  assert.notEqual(digestOf([{ ...a, path: nonUtf8 }], root), digestOf([{ ...a, path: Buffer.from([0x66, 0xfe]).toString('latin1') }], root), 'names are hashed as bytes')
})

test('decideFull follows the policy', () => {
  const chain = [rec(1, { full: 100 }), rec(2, { delta: 30 }), rec(3, { delta: 30 })]
  assert.equal(decideFull({ policy: DEFAULT_FULL_POLICY, forced: false, chain, thisDeltaBytes: 10 }).full, false)
  assert.equal(decideFull({ policy: DEFAULT_FULL_POLICY, forced: false, chain, thisDeltaBytes: 40 }).full, true)
  assert.equal(decideFull({ policy: DEFAULT_FULL_POLICY, forced: true, chain, thisDeltaBytes: 0 }).full, true)
  assert.equal(decideFull({ policy: { deltaBytesRatio: 10, maxChain: 3 }, forced: false, chain, thisDeltaBytes: 1 }).full, true)
})

test('every name Linux allows is a path; link targets are carried verbatim', () => {
  const bytes = (...b: number[]): string => Buffer.from(b).toString('latin1')
  for (const bad of ['', '/etc/passwd', '../x', 'a/../b', 'a//b', './a', 'a/.', 'a\0b', 'x'.repeat(256), 'snow\u2603']) assert.ok(pathProblem(bad), bad)
  for (const good of ['a', 'a b/c', 'caf\xc3\xa9/\n', 'odd/back\\slash.m3u', 'tab\there', bytes(0x6e, 0xff, 0xfe), 'x'.repeat(255)]) assert.equal(pathProblem(good), null, good)
  for (const target of ['/etc/passwd', '../../../x', 'up/..', 'dangling', bytes(0xff), 'loop']) assert.equal(linkTargetProblem(target), null, target)
  assert.ok(linkTargetProblem(''))
  assert.ok(linkTargetProblem('a\0b'))
  assert.ok(linkTargetProblem('x'.repeat(4096)))
})

test('a manifest round-trips and its order is enforced', () => {
  const entries: ManifestEntry[] = [
    { type: 'd', path: 'a', mode: 0o755, mtime: MT },
    { type: 'f', path: 'a/f\nnewline', mode: 0o644, size: 3, mtime: '-1.500000000' },
    { type: 'f', path: Buffer.from('a/g\xff\\', 'latin1').toString('latin1'), mode: 0o644, size: 3, mtime: MT },
    { type: 'l', path: 'a/l', target: Buffer.from('/abs/\xfe', 'latin1').toString('latin1'), mtime: MT },
  ]
  const text = encodeHeaderLine({ manifest: MANIFEST_FORMAT, id: 2, kind: 'delta', base: 1, entries: 4, deleted: 2, root: { mode: 0o750, mtime: MT } }) + encodeDeletionLine('z/y') + encodeDeletionLine('z') + entries.map(encodeEntryLine).join('')
  const cursor = new ManifestCursor(Buffer.from(text))
  const lines = []
  for (let l = cursor.next(); l; l = cursor.next()) lines.push(l)
  assert.deepEqual(lines.map((l) => (l.kind === 'entry' ? l.entry : l.path)), ['z/y', 'z', ...entries])
  assert.deepEqual(cursor.header.root, { mode: 0o750, mtime: MT })
  assert.match(text, /"pb":"/, 'a name that is not UTF-8 travels as base64')
  const dup = new ManifestCursor(Buffer.from(encodeHeaderLine({ manifest: MANIFEST_FORMAT, id: 2, kind: 'full', base: null, entries: 2, deleted: 0, root: { mode: 0o755, mtime: MT } }) + encodeEntryLine(entries[0]!) + encodeEntryLine(entries[0]!)))
  dup.next()
  assert.throws(() => dup.next(), /repeated or out of order/)
  assert.throws(() => parseBodyLine(JSON.stringify({ t: 'f', p: '../x', m: 420, s: 1, u: MT }), 2), /'\.\.' segment/)
  assert.equal(parseBodyLine(JSON.stringify({ t: 'l', p: 'x', l: '/etc', u: MT }), 2).kind, 'entry', 'an absolute link target is carried')
  assert.throws(() => parseBodyLine(JSON.stringify({ t: 'c', p: 'x', u: MT }), 2), /unknown entry type/)
  assert.throws(() => parseBodyLine(JSON.stringify({ t: 'f', p: 'x', m: 420, s: 1 }), 2), /mtime/, 'every entry has its mtime')
  assert.throws(() => parseBodyLine(JSON.stringify({ t: 'f', p: 'x', pb: 'eA==', m: 420, s: 1, u: MT }), 2), /both p and pb/)
  assert.throws(() => parseBodyLine(JSON.stringify({ t: 'f', p: 'suid', m: 0o4755, s: 1, u: MT }), 2), /mode/, 'setuid is never carried')
  assert.throws(() => parseBodyLine(JSON.stringify({ t: 'd', p: 'sgid', m: 0o2775, u: MT }), 2), /mode/, 'nor setgid')
  assert.equal(parseBodyLine(JSON.stringify({ t: 'd', p: 'tmp', m: 0o1777, u: MT }), 2).kind, 'entry', 'sticky is')
})

test('a manifest carries no per-file hash, and an older format is refused with what to do', () => {
  const file: TreeEntry = { type: 'f', path: 'a.m3u', mode: 0o644, size: 3, mtime: MT, sha256: sha('3') }
  assert.deepEqual(JSON.parse(encodeEntryLine(file)), { t: 'f', p: 'a.m3u', m: 0o644, s: 3, u: MT }, "the master's hash stays out of the manifest")
  assert.deepEqual(parseBodyLine(encodeEntryLine(file), 2), { kind: 'entry', entry: { type: 'f', path: 'a.m3u', mode: 0o644, size: 3, mtime: MT } })
  for (const old of ['playlist-snapshot-manifest/1', 'playlist-snapshot-manifest/2']) {
    const line = JSON.stringify({ manifest: old, id: 1, kind: 'full', base: null, entries: 0, deleted: 0 }) + '\n'
    assert.throws(() => new ManifestCursor(Buffer.from(line)), /written by an older master.*upgrade the master: its first build after the upgrade publishes a full/)
  }
})

test('a manifest streamed in pieces reads as the whole one, holds only a window, and is refused past its bound as it arrives', async () => {
  const entries: ManifestEntry[] = Array.from({ length: 300 }, (_, i) => ({ type: 'f', path: `f${String(i).padStart(4, '0')}`, mode: 0o644, size: i, mtime: MT }))
  const header = encodeHeaderLine({ manifest: MANIFEST_FORMAT, id: 2, kind: 'full', base: null, entries: entries.length, deleted: 0, root: { mode: 0o755, mtime: MT } })
  const text = Buffer.from(header + entries.map(encodeEntryLine).join(''))
  async function* piecesOf(buf: Buffer, size: number): AsyncGenerator<Buffer> {
    for (let o = 0; o < buf.length; o += size) yield buf.subarray(o, o + size)
  }
  const readAll = async (c: ManifestCursor): Promise<ManifestEntry[]> => {
    const seen: ManifestEntry[] = []
    for (;;) {
      if (!c.ready(1)) await c.fill(16)
      const line = c.next()
      if (line === null) return seen
      assert.equal(line.kind, 'entry')
      if (line.kind === 'entry') seen.push(line.entry)
    }
  }
  for (const size of [1, 7, 4096, text.length]) {
    const c = await ManifestCursor.open(() => piecesOf(text, size), text.length, 'the manifest')
    assert.deepEqual(await readAll(c), entries, `pieces of ${size} bytes`)
    await c.rewind()
    assert.deepEqual(await readAll(c), entries, `pieces of ${size} bytes, read again`)
    await c.close()
  }

  // Only what was filled is held: reading past it is the caller's bug, said so, not a wait or a wrong line.
  const windowed = await ManifestCursor.open(() => piecesOf(text, 7), text.length, 'the manifest')
  await windowed.fill(2)
  assert.ok(windowed.next() && windowed.next())
  assert.equal(windowed.ready(1), false, 'the third line is not read yet')
  assert.throws(() => windowed.next(), /internal: the manifest was read past its window/)
  await windowed.close()

  // The size bound (from the signed counts) is enforced on the bytes as they come, before they are all in.
  const bomb = await ManifestCursor.open(() => piecesOf(text, 64), text.length - 1, 'manifest of snapshot 2')
  await assert.rejects(readAll(bomb), /manifest of snapshot 2 unpacks to more than \d+ bytes/)

  // Bytes that are not UTF-8 in a later line are refused at that line: a stray byte, a surrogate, an
  // overlong form; U+FFFD itself, as UTF-8, is a name like any other.
  for (const odd of ['\xff', '\xed\xa0\x80', '\xc0\xaf', 'a\xe2\x82']) {
    const line = Buffer.from(`{"t":"f","p":"f0000${odd}","m":420,"s":0,"u":"${MT}"}\n`, 'latin1')
    const bad = Buffer.concat([text.subarray(0, header.length), line, text.subarray(header.length)])
    await assert.rejects(readAll(await ManifestCursor.open(() => piecesOf(bad, 7), bad.length, 'the manifest')), /the manifest is not valid UTF-8 text \(line 2\)/, JSON.stringify(odd))
  }
  const replacement = Buffer.from(header.replace('"entries":300', '"entries":1') + encodeEntryLine({ type: 'f', path: Buffer.from('\ufffd.m3u').toString('latin1'), mode: 0o644, size: 0, mtime: MT }))
  const readBack = await readAll(await ManifestCursor.open(() => piecesOf(replacement, 7), replacement.length, 'the manifest'))
  assert.equal(readBack[0]!.path, Buffer.from('\ufffd.m3u').toString('latin1'), 'U+FFFD in a name is carried')

  // A second pass must read the same manifest.
  let passes = 0
  const other = Buffer.from(header.replace('"id":2', '"id":3') + entries.map(encodeEntryLine).join(''))
  const changing = await ManifestCursor.open(() => piecesOf(passes++ === 0 ? text : other, 7), text.length, 'the manifest')
  await assert.rejects(changing.rewind(), /the manifest changed while it was being applied/)
})
