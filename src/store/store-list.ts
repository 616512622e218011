import { recordObjects, type SnapshotRecord } from '../core/snapshot-record.js'
import type { StoreClient } from './store-client.js'

/**
 * `snapshot list`: the snapshots a store offers, read the way a replica reads them (a directory or
 * an http(s) URL, through the same store client): the signed pointer's chain, then the records
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

const MAX_WALK = 1_000_000

export async function listStore(store: StoreClient): Promise<StoreListing> {
  const pointer = await store.pointer()
  const chain = [...pointer.chain].reverse() // newest first while walking
  // Back from the chain's oldest until the first snapshot, or one that was pruned (the listing starts after it).
  const before = await store.walkBack(chain[chain.length - 1]!, () => true, { max: MAX_WALK - chain.length })
  return { latest: pointer.latest.id, snapshots: [...chain, ...before].reverse().map(describe) }
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
