import { join } from 'node:path'
import { acquireLock } from '../fs/lock-file.js'
import type { StoreClient } from '../store/store-client.js'
import { MIRROR_LOCK } from '../store/store-layout.js'
import { DirDestination } from './dir-destination.js'
import { readRemoteStore } from './mirror-source.js'
import { copyStore, readDestination, type PublishResult } from './store-copy.js'
import type { StoreDestination } from './store-destination.js'

/**
 * `snapshot mirror`, one pass: bring a relay (a directory or a bucket) up to the origin's latest
 * snapshot, verified as a replica verifies it (mirror-source.ts), written by the same code as
 * `snapshot publish` (store-copy.ts): objects, then records, then the pointer, then what the
 * origin's chain no longer names, except what the relay's previous pointer named.
 */
export interface MirrorOptions {
  /** The origin, read under the keys the relay trusts. */
  readonly store: StoreClient
  readonly to: StoreDestination
  /** Where objects bound for a bucket wait between download and upload (the caller makes and removes it). */
  readonly stagingDir: string
  /** Destination paths confirmed so far: kept by the caller across the passes of a --watch. */
  readonly verified: Set<string>
  readonly concurrency?: number
  /** Follow the origin's prune (default true). */
  readonly prune?: boolean
  /** How long to wait for another mirror holding a directory relay's lock (default 0: exit 11 at once). */
  readonly lockWaitMs?: number
  readonly log?: (line: string) => void
}

export interface MirrorResult extends PublishResult {
  readonly from: string
  /** The mirrored snapshot's signed build time, and its parent's: for the --max-age check. */
  readonly latestCreated: string
  readonly latestParentCreated?: string
}

export async function mirrorStore(o: MirrorOptions): Promise<MirrorResult> {
  if (!(o.to instanceof DirDestination)) return mirrorUnlocked(o)
  await o.to.refuseMasterStore('--to')
  await o.to.prepare()
  // Two mirrors into one directory (the service and a manual run) would each judge "never
  // backwards" against the pointer they read at their start: one at a time. While it is held, the
  // relay's server holds requests for files it lacks until they land (http/mirror-hold.ts).
  const lock = await acquireLock(join(o.to.root, MIRROR_LOCK), `the relay ${o.to.root}`, { waitMs: o.lockWaitMs ?? 0 })
  try {
    return await mirrorUnlocked(o)
  } finally {
    lock.release()
  }
}

async function mirrorUnlocked(o: MirrorOptions): Promise<MirrorResult> {
  const held = await readDestination(o.to)
  const remote = { files: new Map(held.files), pointer: held.pointer }
  const { source, pointer } = await readRemoteStore({
    store: o.store,
    to: o.to,
    remote,
    stagingDir: o.stagingDir,
    verified: o.verified,
    ...(o.log ? { log: o.log } : {}),
  })
  const r = await copyStore({
    source,
    to: o.to,
    remote,
    ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
    prune: o.prune ?? true,
    verb: 'mirroring',
    ...(o.log ? { log: o.log } : {}),
  })
  for (const path of r.deleted) o.verified.delete(path)
  const latest = pointer.latest
  const parentCreated = latest.parentCreated ?? pointer.chain.find((c) => c.id === latest.parent)?.created
  return { ...r, from: o.store.description, latestCreated: latest.created, ...(parentCreated !== undefined ? { latestParentCreated: parentCreated } : {}) }
}
