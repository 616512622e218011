import type { KeyObject } from 'node:crypto'
import { NoSnapshotError } from '../core/errors.js'
import { openEnvelope, parsePointerPayload, parseRecordPayload } from '../core/pointer.js'
import { recordObjects, type SnapshotRecord } from '../core/snapshot-record.js'
import type { ObjectSource } from './object-source.js'
import { LATEST, recordRelPath } from './store-layout.js'

/**
 * `snapshot list`: the snapshots a store offers, read the way a replica reads them (a directory or
 * an http(s) URL, through the same ObjectSource): the signed pointer's chain, then the records
 * before it, walking parents back until the first snapshot or one that was pruned.
 */
export interface ListedSnapshot {
  readonly id: number
  readonly parent: number | null
  readonly kind: 'full' | 'delta'
  readonly created: string
  /** Compressed bytes of the snapshot's objects (its delta and, for a full, its full archive). */
  readonly size: number
  readonly files: number
  readonly dirs: number
  readonly links: number
  /** Bytes of the tree's files. */
  readonly bytes: number
  /** Entries plus deletions of its delta; null for a first snapshot, which has none. */
  readonly changes: number | null
  readonly rollbackOf: number | null
}

export interface StoreListing {
  readonly latest: number
  /** Ascending ids. */
  readonly snapshots: readonly ListedSnapshot[]
}

const RECORD_MAX_BYTES = 4 << 20
const MAX_WALK = 1_000_000

export async function listStore(opts: { source: ObjectSource; trustedKeys: readonly KeyObject[] }): Promise<StoreListing> {
  const pointerBytes = await opts.source.getSmall(LATEST, RECORD_MAX_BYTES)
  if (!pointerBytes) throw new NoSnapshotError(`${opts.source.description} has no snapshot yet (no ${LATEST})`)
  const pointer = parsePointerPayload(openEnvelope(pointerBytes, opts.trustedKeys))
  const records: SnapshotRecord[] = [...pointer.chain].reverse() // newest first while walking
  for (let r = records[records.length - 1]; r && r.parent !== null && records.length < MAX_WALK; ) {
    const bytes = await opts.source.getSmall(recordRelPath(r.parent), RECORD_MAX_BYTES)
    if (!bytes) break // pruned: the listing starts after it
    const parent = parseRecordPayload(openEnvelope(bytes, opts.trustedKeys), r.parent)
    records.push(parent)
    r = parent
  }
  return { latest: pointer.latest.id, snapshots: records.reverse().map(describe) }
}

function describe(r: SnapshotRecord): ListedSnapshot {
  return {
    id: r.id,
    parent: r.parent,
    kind: r.kind,
    created: r.created,
    size: recordObjects(r).reduce((sum, o) => sum + o.length, 0),
    files: r.files,
    dirs: r.dirs,
    links: r.links,
    bytes: r.bytes,
    changes: r.delta ? r.delta.entries + r.delta.deleted : null,
    rollbackOf: r.rollbackOf ?? null,
  }
}
