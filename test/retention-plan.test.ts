import assert from 'node:assert/strict'
import { test } from 'node:test'
import { planRetention, type RetentionFile, type RetentionInput } from '../src/core/retention-plan.js'
import type { ArchivePair, SnapshotRecord } from '../src/core/snapshot-record.js'

const HOUR = 3600_000
const NOW = Date.parse('2030-01-01T12:00:00Z')

function sha(id: number, what: string): string {
  return `${what === 'full' ? 'f' : 'd'}${String(id).padStart(63, '0')}`
}
function pair(id: number, what: 'full' | 'delta'): ArchivePair {
  const a = sha(id, what)
  const m = a.replace(/^./, what === 'full' ? 'e' : 'c')
  return {
    archive: { path: `objects/${a}.tar.zst`, sha256: a, length: 100 * id, tarBytes: 512 },
    manifest: { path: `objects/${m}.manifest.zst`, sha256: m, length: 10 },
    entries: 1,
    deleted: 0,
  }
}
/** A record; `full` says it carries a full archive; created `hoursAgo` before NOW. */
function rec(id: number, parent: number | null, full: boolean, hoursAgo = 10): SnapshotRecord {
  return {
    id,
    parent,
    created: new Date(NOW - hoursAgo * HOUR).toISOString(),
    kind: full ? 'full' : 'delta',
    treeDigest: '0'.repeat(64),
    files: 1,
    dirs: 0,
    links: 0,
    bytes: 1,
    ...(parent !== null ? { delta: pair(id, 'delta') } : {}),
    ...(full ? { full: pair(id, 'full') } : {}),
  }
}
function objectsOf(records: readonly SnapshotRecord[], mtimeMs = NOW - 10 * HOUR): RetentionFile[] {
  return records.flatMap((r) => [r.delta, r.full].flatMap((p) => (p ? [p.archive, p.manifest] : [])).map((o) => ({ path: o.path, mtimeMs, size: o.length })))
}
/** A linear history 1..n where the ids in `fulls` carry a full archive; the latest is n. */
function input(n: number, fulls: number[], over: Partial<RetentionInput> = {}): RetentionInput {
  const all = Array.from({ length: n }, (_, i) => rec(i + 1, i === 0 ? null : i, i === 0 || fulls.includes(i + 1), n - i))
  const lastFull = Math.max(...all.filter((r) => r.full).map((r) => r.id))
  return {
    latestId: n,
    chain: all.filter((r) => r.id >= lastFull),
    records: new Map(all.map((r) => [r.id, r])),
    recordMtimeMs: new Map(all.map((r) => [r.id, NOW - 10 * HOUR])),
    objects: objectsOf(all),
    temps: [],
    keep: 1,
    nowMs: NOW,
    graceMs: HOUR / 2,
    ...over,
  }
}
const ids = (files: readonly RetentionFile[]): string[] => files.map((f) => f.path)

test('keep 1 keeps the latest full and every delta after it, and removes the rest with their objects', () => {
  const p = planRetention(input(6, [4]))
  assert.deepEqual(p.keptIds, [4, 5, 6])
  assert.deepEqual(p.removeIds, [1, 2, 3])
  const removed = new Set(ids(p.removeObjects))
  for (const gone of [pair(1, 'full'), pair(2, 'delta'), pair(3, 'delta')]) {
    assert.ok(removed.has(gone.archive.path))
    assert.ok(removed.has(gone.manifest.path))
  }
  for (const r of [4, 5, 6]) assert.ok(!removed.has(pair(r, 'delta').archive.path))
  assert.ok(!removed.has(pair(4, 'full').archive.path))
})

test('keep N keeps each of the N most recent snapshots restorable, back to the full before it', () => {
  assert.deepEqual(planRetention(input(6, [4], { keep: 3 })).keptIds, [4, 5, 6])
  const p = planRetention(input(6, [4], { keep: 4 })) // snapshot 3 needs full 1 and delta 2
  assert.deepEqual(p.keptIds, [1, 2, 3, 4, 5, 6])
  assert.deepEqual(p.removeIds, [])
  assert.deepEqual(p.removeObjects, [])
  assert.deepEqual(planRetention(input(3, [], { keep: 100 })).keptIds, [1, 2, 3])
})

test('a superseded snapshot stays for the grace period after the full that replaced it', () => {
  const base = input(4, [3])
  // the full 3 was published 2 hours ago: with a 3-hour grace, 1 and 2 are held
  const held = planRetention({ ...base, graceMs: 3 * HOUR })
  assert.deepEqual(held.removeIds, [])
  assert.deepEqual(held.heldIds, [
    { id: 1, reason: 'grace' },
    { id: 2, reason: 'grace' },
  ])
  assert.deepEqual(held.removeObjects, [])
  const gone = planRetention({ ...base, graceMs: HOUR })
  assert.deepEqual(gone.removeIds, [1, 2])
})

test('records above the latest (a build in progress or one that died) are never removed, nor their objects', () => {
  const base = input(3, [3])
  const inProgress = rec(4, 3, false, 20)
  const p = planRetention({
    ...base,
    records: new Map([...base.records, [4, inProgress]]),
    recordMtimeMs: new Map([...base.recordMtimeMs, [4, NOW - 20 * HOUR]]),
    objects: [...base.objects, ...objectsOf([inProgress], NOW - 20 * HOUR)],
  })
  assert.deepEqual(p.heldIds, [{ id: 4, reason: 'unpublished' }])
  assert.ok(!ids(p.removeObjects).includes(pair(4, 'delta').archive.path))
  assert.deepEqual(p.removeIds, [1, 2])
})

test('a record no published snapshot leads to is removed once older than the grace period', () => {
  // 1 full, 2, then a build 3 that died after writing its record; 4 was built on 2
  const r1 = rec(1, null, true)
  const r2 = rec(2, 1, false)
  const dead = rec(3, 2, false)
  const r4 = rec(4, 2, false)
  const records = new Map([r1, r2, dead, r4].map((r) => [r.id, r]))
  const make = (deadMtime: number): RetentionInput => ({
    latestId: 4,
    chain: [r1, r2, r4],
    records,
    recordMtimeMs: new Map([...records.keys()].map((id) => [id, id === 3 ? deadMtime : NOW - 10 * HOUR])),
    objects: objectsOf([r1, r2, dead, r4]),
    temps: [],
    keep: 1,
    nowMs: NOW,
    graceMs: HOUR,
  })
  const old = planRetention(make(NOW - 2 * HOUR))
  assert.deepEqual(old.keptIds, [1, 2, 4])
  assert.deepEqual(old.removeIds, [3])
  assert.deepEqual(ids(old.removeObjects).sort(), [pair(3, 'delta').archive.path, pair(3, 'delta').manifest.path].sort())
  const young = planRetention(make(NOW - 1000))
  assert.deepEqual(young.removeIds, [])
  assert.deepEqual(young.heldIds, [{ id: 3, reason: 'grace' }])
  assert.deepEqual(young.removeObjects, [])
})

test('unreferenced objects and temp files go only once older than the grace period', () => {
  const base = input(2, [])
  const oldObj = { path: `objects/${'a'.repeat(64)}.tar.zst`, mtimeMs: NOW - 2 * HOUR, size: 5 }
  const youngObj = { path: `objects/${'b'.repeat(64)}.tar.zst`, mtimeMs: NOW - 60_000, size: 5 }
  const oldTemp = { path: '.state/.index-3.bin.x.tmp', mtimeMs: NOW - 2 * HOUR, size: 1 }
  const youngTemp = { path: 'objects/.incoming.tar.zst.y.tmp', mtimeMs: NOW - 1000, size: 1 }
  const p = planRetention({ ...base, graceMs: HOUR, objects: [...base.objects, oldObj, youngObj], temps: [oldTemp, youngTemp] })
  assert.deepEqual(ids(p.removeObjects), [oldObj.path])
  assert.deepEqual(ids(p.heldObjects), [youngObj.path])
  assert.deepEqual(ids(p.removeTemps), [oldTemp.path])
  assert.deepEqual(ids(p.heldTemps), [youngTemp.path])
  assert.deepEqual(p.removeIds, [])
})

test('an object named by a kept record is never removed, even if a removed record names it too', () => {
  const base = input(4, [3])
  const r3 = base.records.get(3)!
  const shared = base.records.get(1)!.full!
  // snapshot 3's full archive happens to be byte-identical to snapshot 1's
  const r3shared: SnapshotRecord = { ...r3, full: shared }
  const records = new Map(base.records)
  records.set(3, r3shared)
  const p = planRetention({ ...base, records, chain: [r3shared, base.records.get(4)!] })
  assert.deepEqual(p.removeIds, [1, 2])
  assert.ok(!ids(p.removeObjects).includes(shared.archive.path))
  assert.ok(ids(p.removeObjects).includes(pair(2, 'delta').archive.path))
})

test('the pointer chain is kept even when its records are missing on disk, and keep < 1 is refused', () => {
  const base = input(3, [2])
  const records = new Map(base.records)
  records.delete(3)
  const p = planRetention({ ...base, records })
  assert.deepEqual(p.keptIds, [2, 3])
  assert.ok(!ids(p.removeObjects).includes(pair(3, 'delta').archive.path))
  assert.throws(() => planRetention({ ...base, keep: 0 }), RangeError)
})

test('an empty store plans nothing but leftovers', () => {
  const stray = { path: `objects/${'c'.repeat(64)}.tar.zst`, mtimeMs: NOW - 2 * HOUR, size: 9 }
  const p = planRetention({ latestId: 0, chain: [], records: new Map(), recordMtimeMs: new Map(), objects: [stray], temps: [], keep: 1, nowMs: NOW, graceMs: HOUR })
  assert.deepEqual(p.keptIds, [])
  assert.deepEqual(ids(p.removeObjects), [stray.path])
})
