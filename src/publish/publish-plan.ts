import { RollbackRefusedError, SnapshotError } from '../core/errors.js'
import { recordObjects, type SnapshotRecord } from '../core/snapshot-record.js'

/**
 * What a publish sends to a bucket and what it deletes there, in the order that keeps readers
 * safe, decided from data alone (publish-store.ts does the I/O):
 *
 *   1. objects the bucket lacks (archives, manifests: named by content, written once);
 *   2. snapshot records the bucket lacks;
 *   3. latest.json, when it differs from the bucket's: the commit point, as on disk;
 *   4. only then, deletions: what the local store no longer has (after `snapshot prune`), except
 *      anything the pointer the bucket held before this publish names (a reader may have just
 *      read it) or the new pointer names. The bucket's own old pointer moves in step 3 first.
 *
 * "Already there" is key and size: objects are named by their sha256, records are written once,
 * so a key of the right size holds the right bytes, and one cut short by a crash is sent again.
 */
export interface StoreFile {
  /** Relative to the store root: `objects/<sha256>.<ext>`, `snapshots/<id>.json`. */
  readonly path: string
  readonly size: number
}

export interface PointerView {
  readonly id: number
  /** The records the pointer's chain carries: their objects and `snapshots/<id>.json` are what it names. */
  readonly chain: readonly SnapshotRecord[]
}

export interface PublishInput {
  readonly local: {
    readonly objects: readonly StoreFile[]
    readonly records: readonly StoreFile[]
    readonly pointer: { readonly bytes: Buffer; readonly view: PointerView }
  }
  /** Every key under the prefix, relative to it, with its size. */
  readonly remote: ReadonlyMap<string, number>
  /** The bucket's latest.json before this publish: null when absent; `view` null when it cannot be read (then nothing is deleted). */
  readonly remotePointer: { readonly bytes: Buffer; readonly view: PointerView | null } | null
  /** Delete what the local store no longer has (default true). */
  readonly prune?: boolean
  /** Publish even when the bucket's pointer is newer than the local one. */
  readonly force?: boolean
}

export interface PublishPlan {
  readonly objects: readonly StoreFile[]
  readonly records: readonly StoreFile[]
  readonly pointer: boolean
  readonly deletes: readonly string[]
  /** Keys the local store no longer has that stay, because a pointer still names them. */
  readonly held: readonly string[]
  readonly skipped: number
  /** Keys the bucket holds that are not ours to judge (say, `objects/README`): never deleted. */
  readonly foreign: number
}

export const LATEST = 'latest.json'
/** Uploads at once, by default. */
export const DEFAULT_CONCURRENCY = 8
const OBJECT_KEY = /^objects\/[0-9a-f]{64}\.[a-z.]+$/
const RECORD_KEY = /^snapshots\/\d+\.json$/

export function pointerNames(view: PointerView): Set<string> {
  const names = new Set<string>()
  for (const r of view.chain) {
    names.add(`snapshots/${r.id}.json`)
    for (const ref of recordObjects(r)) names.add(ref.path)
  }
  return names
}

export function planPublish(input: PublishInput): PublishPlan {
  const { local, remote } = input
  const remoteView = input.remotePointer?.view ?? null
  if (remoteView && remoteView.id > local.pointer.view.id && !input.force) {
    throw new RollbackRefusedError(
      `the destination's latest.json names snapshot ${remoteView.id}, newer than this store's ${local.pointer.view.id}: refusing to move it back (is this the right store, or does another master publish here?); --force publishes anyway`,
    )
  }
  const missing = (f: StoreFile): boolean => remote.get(f.path) !== f.size
  const objects = local.objects.filter(missing)
  const records = [...local.records.filter(missing)].sort((a, b) => recordId(a.path) - recordId(b.path))
  const pointer = !input.remotePointer || !input.remotePointer.bytes.equals(local.pointer.bytes)

  // The pointer must never name what is neither in the bucket nor about to be uploaded.
  const present = new Set<string>([...local.objects, ...local.records].map((f) => f.path))
  for (const name of pointerNames(local.pointer.view)) {
    if (!present.has(name) && !remote.has(name)) {
      throw new SnapshotError(`the store's latest.json names ${name}, which is neither in the store nor in the bucket: refusing to publish a pointer to a missing object (run \`snapshot verify --store\`)`)
    }
  }

  const deletes: string[] = []
  const held: string[] = []
  let foreign = 0
  if (input.prune ?? true) {
    const protectedNames = pointerNames(local.pointer.view)
    if (remoteView) for (const n of pointerNames(remoteView)) protectedNames.add(n)
    for (const key of [...remote.keys()].sort()) {
      if (key === LATEST) continue
      if (!OBJECT_KEY.test(key) && !RECORD_KEY.test(key)) {
        foreign++
        continue
      }
      if (present.has(key)) continue
      // A bucket pointer that cannot be read protects nothing we can name: delete nothing.
      if (input.remotePointer && !remoteView) held.push(key)
      else if (protectedNames.has(key)) held.push(key)
      else deletes.push(key)
    }
  }
  const skipped = local.objects.length + local.records.length - objects.length - records.length
  return { objects, records, pointer, deletes, held, skipped, foreign }
}

function recordId(path: string): number {
  return Number(/(\d+)\.json$/.exec(path)?.[1] ?? 0)
}
