import { lstat, mkdir, readFile } from 'node:fs/promises'
import type { PointerPayload } from '../core/pointer.js'
import { parseSnapshotRecord, type SnapshotRecord } from '../core/snapshot-record.js'
import { writeFileAtomic } from '../fs/durable.js'
import type { StoreClient } from '../store/store-client.js'
import type { ReplicaLayout } from './replica-layout.js'

/**
 * The replica's cache of snapshot records (records/<id>.json), each one verified before it was
 * written (by its signature, or through the signed pointer's chain): the records a tree's
 * snapshot needs stay at hand after the pointer's chain has moved past it, and after the store
 * pruned them.
 */
const MAX_RECORD_WALK = 10_000

export async function loadCachedRecord(layout: ReplicaLayout, id: number): Promise<SnapshotRecord | undefined> {
  const text = await readFile(layout.record(id), 'utf8').catch(() => null)
  if (!text) return undefined
  try {
    const record = parseSnapshotRecord(JSON.parse(text))
    return record.id === id ? record : undefined
  } catch {
    return undefined // a damaged cache entry: fetch it again
  }
}

/** A record from the store, verified, then cached; undefined when the store no longer has it. */
export async function fetchRecord(store: StoreClient, layout: ReplicaLayout, id: number): Promise<SnapshotRecord | undefined> {
  const record = await store.record(id)
  if (record) await cacheRecord(layout, record)
  return record
}

async function cacheRecord(layout: ReplicaLayout, record: SnapshotRecord): Promise<void> {
  const have = await lstat(layout.record(record.id)).catch(() => null)
  if (!have) await writeFileAtomic(layout.record(record.id), JSON.stringify(record) + '\n')
}

/**
 * Records from the pointer, the local cache and the store, walking parents from `start` (the
 * latest by default) back to `baseId` (or, from an empty tree, to a full archive). A parent
 * record that does not verify (a snapshot signed by a key this replica does not trust, which it
 * refused when it was the latest) cannot be a step of the plan, but must not fail a pull to a
 * later, trusted snapshot that carries a full archive: it ends the walk, as a pruned one does,
 * and the plan takes a full archive instead.
 */
export async function collectRecords(store: StoreClient, layout: ReplicaLayout, pointer: PointerPayload, baseId: number | null, start: SnapshotRecord = pointer.latest): Promise<Map<number, SnapshotRecord>> {
  const records = new Map<number, SnapshotRecord>()
  for (const r of pointer.chain) records.set(r.id, r)
  records.set(start.id, start)
  await mkdir(layout.recordsDir, { recursive: true })
  let sawFull = false
  const goOn = (r: SnapshotRecord): boolean => {
    sawFull ||= r.full !== undefined
    return !((baseId !== null && r.id <= baseId) || (baseId === null && sawFull))
  }
  const lookup = async (id: number): Promise<SnapshotRecord | undefined> => records.get(id) ?? (await loadCachedRecord(layout, id)) ?? (await fetchRecord(store, layout, id))
  for (const parent of await store.walkBack(start, goOn, { lookup, unverifiableEnds: true, max: MAX_RECORD_WALK })) records.set(parent.id, parent)
  for (const rec of pointer.chain) await cacheRecord(layout, rec)
  return records
}
