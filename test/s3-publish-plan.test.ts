import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { SnapshotRecord } from '../src/core/snapshot-record.js'
import { forEachBounded } from '../src/core/bounded-pool.js'
import { planPublish, type PointerView, type PublishInput, type StoreFile } from '../src/publish/publish-plan.js'
import { parseS3Url } from '../src/store/s3-location.js'

/** The pure planner of `snapshot publish`: no server, no disk. */
const hex = (n: number): string => n.toString(16).padStart(64, '0')
const obj = (n: number, ext = 'tar.zst'): string => `objects/${hex(n)}.${ext}`
function record(id: number, parent: number | null, full: boolean, n: number): SnapshotRecord {
  const pair = { archive: { path: obj(n), sha256: hex(n), length: 100 + n, tarBytes: 1000 }, manifest: { path: obj(n, 'manifest.zst'), sha256: hex(n), length: 10 + n }, entries: 1, deleted: 0 }
  return { id, parent, created: '2026-12-06T00:00:00.000Z', kind: full ? 'full' : 'delta', treeDigest: hex(0), files: 1, dirs: 0, links: 0, bytes: 1, ...(full ? { full: pair } : { delta: pair }) }
}
function view(...chain: SnapshotRecord[]): PointerView {
  return { id: chain[chain.length - 1]!.id, chain }
}
function filesOf(...records: SnapshotRecord[]): { objects: StoreFile[]; records: StoreFile[] } {
  const objects: StoreFile[] = []
  for (const r of records) {
    const p = (r.full ?? r.delta)!
    objects.push({ path: p.archive.path, size: p.archive.length }, { path: p.manifest.path, size: p.manifest.length })
  }
  return { objects, records: records.map((r) => ({ path: `snapshots/${r.id}.json`, size: 50 + r.id })) }
}
const remoteOf = (files: { objects: StoreFile[]; records: StoreFile[] }, extra: [string, number][] = []): Map<string, number> =>
  new Map([...files.objects, ...files.records].map((f) => [f.path, f.size] as [string, number]).concat(extra))

const r1 = record(1, null, true, 1)
const r2 = record(2, 1, false, 2)
const r3 = record(3, 2, true, 3)

test('an empty bucket gets every object, then the records, then the pointer; nothing deleted', () => {
  const local = filesOf(r1, r2)
  const plan = planPublish({ local: { ...local, pointer: { bytes: Buffer.from('p2'), view: view(r1, r2) } }, remote: new Map(), remotePointer: null })
  assert.equal(plan.objects.length, 4)
  assert.deepEqual(plan.records.map((r) => r.path), ['snapshots/1.json', 'snapshots/2.json'])
  assert.equal(plan.pointer, true)
  assert.deepEqual(plan.deletes, [])
  assert.equal(plan.skipped, 0)
})

test('what the bucket has with the same size is skipped; a short one (a crash) is sent again; an equal pointer is not', () => {
  const local = filesOf(r1, r2)
  const remote = remoteOf(local)
  remote.set(local.objects[3]!.path, 3) // cut short
  const plan = planPublish({
    local: { ...local, pointer: { bytes: Buffer.from('p2'), view: view(r1, r2) } },
    remote: new Map([...remote, ['latest.json', 2]]),
    remotePointer: { bytes: Buffer.from('p2'), view: view(r1, r2) },
  })
  assert.deepEqual(plan.objects.map((o) => o.path), [local.objects[3]!.path])
  assert.deepEqual(plan.records, [])
  assert.equal(plan.pointer, false)
  assert.equal(plan.skipped, 5)
})

test('after a prune: deletes what the store lost, holds what the bucket\'s current pointer names, never foreign keys or the pointer', () => {
  // the store pruned 1 and 2 (a full came with 3); the bucket still points at 2
  const local = filesOf(r3)
  const remote = remoteOf(filesOf(r1, r2), [['latest.json', 9], ['objects/README', 5], ['notes.txt', 1]])
  const plan = planPublish({ local: { ...local, pointer: { bytes: Buffer.from('p3'), view: view(r3) } }, remote, remotePointer: { bytes: Buffer.from('p2'), view: view(r1, r2) } })
  assert.deepEqual(plan.deletes, [])
  assert.deepEqual([...plan.held].sort(), [obj(1), obj(1, 'manifest.zst'), obj(2), obj(2, 'manifest.zst'), 'snapshots/1.json', 'snapshots/2.json'].sort())
  assert.equal(plan.foreign, 2)
  // the next publish, with the bucket now at 3: they go
  const next = planPublish({ local: { ...local, pointer: { bytes: Buffer.from('p3'), view: view(r3) } }, remote: new Map([...remote, ...remoteOf(local)]), remotePointer: { bytes: Buffer.from('p3'), view: view(r3) } })
  assert.deepEqual([...next.deletes].sort(), [obj(1), obj(1, 'manifest.zst'), obj(2), obj(2, 'manifest.zst'), 'snapshots/1.json', 'snapshots/2.json'].sort())
  assert.deepEqual(next.held, [])
  // --no-delete: nothing
  assert.deepEqual(planPublish({ local: { ...local, pointer: { bytes: Buffer.from('p3'), view: view(r3) } }, remote, remotePointer: { bytes: Buffer.from('p3'), view: view(r3) }, prune: false }).deletes, [])
})

test('a bucket pointer that cannot be read protects everything: nothing is deleted', () => {
  const local = filesOf(r3)
  const remote = remoteOf(filesOf(r1, r2, r3), [['latest.json', 9]])
  const plan = planPublish({ local: { ...local, pointer: { bytes: Buffer.from('p3'), view: view(r3) } }, remote, remotePointer: { bytes: Buffer.from('garbage'), view: null } })
  assert.deepEqual(plan.deletes, [])
  assert.equal(plan.held.length, 6)
})

test('refuses to move the bucket back to an older snapshot (exit 6) unless forced', () => {
  const local = filesOf(r1, r2)
  const input: PublishInput = { local: { ...local, pointer: { bytes: Buffer.from('p2'), view: view(r1, r2) } }, remote: remoteOf(filesOf(r3)), remotePointer: { bytes: Buffer.from('p3'), view: view(r3) } }
  assert.throws(() => planPublish(input), (err: Error & { exitCode?: number }) => err.exitCode === 6 && /newer/.test(err.message))
  assert.equal(planPublish({ ...input, force: true }).pointer, true)
})

test('refuses to publish a pointer that names an object neither in the store nor in the bucket', () => {
  const local = filesOf(r1, r2)
  local.objects.pop()
  assert.throws(() => planPublish({ local: { ...local, pointer: { bytes: Buffer.from('p2'), view: view(r1, r2) } }, remote: new Map(), remotePointer: null }), /neither in the store nor in the bucket/)
  // ...but one already in the bucket is fine
  const plan = planPublish({ local: { ...local, pointer: { bytes: Buffer.from('p2'), view: view(r1, r2) } }, remote: new Map([[obj(2, 'manifest.zst'), 12]]), remotePointer: null })
  assert.equal(plan.pointer, true)
})

test('s3:// URLs: bucket and prefix, refused when malformed', () => {
  assert.deepEqual(parseS3Url('s3://my-bucket/a/b/'), { bucket: 'my-bucket', prefix: 'a/b/' })
  assert.deepEqual(parseS3Url('s3://my-bucket'), { bucket: 'my-bucket', prefix: '' })
  for (const bad of ['s3://', 's3://UPPER/x', 's3://b/../x', 'http://b/x', 's3://ab/x']) assert.throws(() => parseS3Url(bad), /s3:\/\/|prefix/, bad)
})

test('forEachBounded: never more than the limit at once; the first failure stops new work and is thrown', async () => {
  let running = 0
  let peak = 0
  const done: number[] = []
  await forEachBounded([...Array(20).keys()], 3, async (i) => {
    running++
    peak = Math.max(peak, running)
    await new Promise((r) => setImmediate(r))
    running--
    done.push(i)
  })
  assert.equal(peak, 3)
  assert.equal(done.length, 20)
  const started: number[] = []
  await assert.rejects(
    forEachBounded([...Array(20).keys()], 2, async (i) => {
      started.push(i)
      await new Promise((r) => setImmediate(r))
      if (i === 1) throw new Error('boom')
    }),
    /boom/,
  )
  assert.ok(started.length < 20, `work went on after the failure: ${started.length}`)
})
