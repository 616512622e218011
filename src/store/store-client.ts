import { NoSnapshotError, VerifyError } from '../core/errors.js'
import type { PointerPayload } from '../core/pointer.js'
import type { SnapshotRecord } from '../core/snapshot-record.js'
import { DirSource } from './dir-source.js'
import type { ObjectSource } from './object-source.js'
import { LATEST, recordRelPath } from './store-layout.js'
import { TrustedKeys } from './trusted-keys.js'

/**
 * Reading a store, as every reader does it (a replica's pull, rollback and status, `snapshot
 * list`, `verify --target`, the master's own build, prune and fleet rollback): the signed
 * pointer, a record by id, and the walk back through parent records, each verified under the
 * keys bound here once. The bytes come from an ObjectSource (a directory, a URL, a bucket or
 * mirrors); objects are fetched through `source` and checked against the records.
 */
export const ENVELOPE_MAX_BYTES = 4 << 20 // a pointer with its chain, or one record: a few KiB in practice

export type RecordLookup = (id: number) => Promise<SnapshotRecord | undefined>

export interface WalkOptions {
  /** A parent that does not verify ends the walk, as one the store no longer has does (instead of failing it). */
  readonly unverifiableEnds?: boolean
  /** The most parents taken. */
  readonly max?: number
}

export class StoreClient {
  constructor(
    readonly source: ObjectSource,
    readonly trust: TrustedKeys,
  ) {}

  /** The master's own store directory: its envelopes are read as they stand (it signed them). */
  static local(root: string): StoreClient {
    return new StoreClient(new DirSource(root), TrustedKeys.none)
  }

  get description(): string {
    return this.source.description
  }

  /** The verified pointer; NoSnapshotError when the store has none yet. */
  async pointer(): Promise<PointerPayload> {
    const pointer = await this.pointerOrNull()
    if (!pointer) throw new NoSnapshotError(`${this.description} has no snapshot yet (no ${LATEST})`)
    return pointer
  }

  async pointerOrNull(): Promise<PointerPayload | null> {
    const bytes = await this.source.getSmall(LATEST, ENVELOPE_MAX_BYTES)
    return bytes ? this.trust.pointer(bytes) : null
  }

  /** The verified record of snapshot `id`; undefined when the store does not have it (pruned, or never built). */
  async record(id: number): Promise<SnapshotRecord | undefined> {
    const bytes = await this.source.getSmall(recordRelPath(id), ENVELOPE_MAX_BYTES)
    return bytes ? this.trust.record(bytes, id) : undefined
  }

  /** walkBack through this store's records, or through `lookup` (a cache, say, that falls back to `record`). */
  walkBack(start: SnapshotRecord, goOn: (r: SnapshotRecord) => boolean, opts: WalkOptions & { lookup?: RecordLookup } = {}): Promise<SnapshotRecord[]> {
    return walkBack(start, goOn, opts.lookup ?? ((id: number) => this.record(id)), opts)
  }
}

/**
 * The parents of `start`, newest first, for as long as `goOn` holds for the record reached
 * (`start` first). Ends at a first snapshot, at a parent that `lookup` cannot find (pruned), or
 * after `max` parents; a parent that does not verify fails the walk unless `unverifiableEnds`.
 */
export async function walkBack(start: SnapshotRecord, goOn: (r: SnapshotRecord) => boolean, lookup: RecordLookup, opts: WalkOptions = {}): Promise<SnapshotRecord[]> {
  const parents: SnapshotRecord[] = []
  for (let r = start; parents.length < (opts.max ?? Infinity) && r.parent !== null && goOn(r); ) {
    const parent = await lookup(r.parent).catch((err: unknown) => {
      if (opts.unverifiableEnds && err instanceof VerifyError) return undefined
      throw err
    })
    if (!parent) break
    parents.push(parent)
    r = parent
  }
  return parents
}
