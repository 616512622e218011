import { lstat, readdir, readFile, realpath } from 'node:fs/promises'
import type { S3Client } from '@aws-sdk/client-s3'
import { NoSnapshotError, UsageError, asSnapshotError } from '../core/errors.js'
import type { S3Location } from '../store/s3-location.js'
import { StoreLayout } from '../store/store-layout.js'
import { DirDestination } from './dir-destination.js'
import type { StoreFile } from './publish-plan.js'
import { S3Destination } from './s3-destination.js'
import { copyStore, viewOf, type CopySource, type PublishResult } from './store-copy.js'
import type { StoreDestination } from './store-destination.js'

export { DEFAULT_PART_BYTES, IMMUTABLE_CACHE, POINTER_CACHE } from './s3-destination.js'
export type { PublishResult } from './store-copy.js'

/**
 * `snapshot publish`: mirrors a local store into a bucket (or a directory) in the order
 * publish-plan.ts chooses, through store-copy.ts, the path `snapshot mirror` takes too. Reads the
 * local pointer before listing the local objects, so the pointer it uploads only names objects
 * that the listing saw (a build running meanwhile adds files it will not name). Takes no lock: a
 * local prune that removes a file mid-publish only removes what the captured pointer no longer
 * needs, and that file is then skipped.
 */
export interface PublishOptions {
  readonly store: string
  /** An S3 prefix and the client that reaches it... */
  readonly to?: S3Location
  readonly client?: S3Client
  /** ...or any destination (a directory: dir-destination.ts). */
  readonly destination?: StoreDestination
  readonly concurrency?: number
  readonly partBytes?: number
  /** Delete from the destination what the local store no longer has (default true). */
  readonly prune?: boolean
  readonly force?: boolean
  /** ListObjectsV2 page size (default: the server's, 1000 on S3). */
  readonly pageSize?: number
  readonly log?: (line: string) => void
}

export async function publishStore(opts: PublishOptions): Promise<PublishResult> {
  const to = opts.destination ?? s3DestinationOf(opts)
  if (to instanceof DirDestination) {
    await refuseSameDirectory(opts.store, to.root)
    await to.refuseMasterStore('--to')
  }
  const source = await readLocalStore(opts.store)
  return copyStore({
    source,
    to,
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    prune: opts.prune ?? true,
    force: opts.force ?? false,
    verb: 'publishing',
    ...(opts.log ? { log: opts.log } : {}),
  })
}

function s3DestinationOf(opts: PublishOptions): S3Destination {
  if (!opts.to || !opts.client) throw new UsageError('publish: give a destination, or an S3 location and its client')
  return new S3Destination(opts.client, opts.to, {
    ...(opts.partBytes !== undefined ? { partBytes: opts.partBytes } : {}),
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    ...(opts.pageSize !== undefined ? { pageSize: opts.pageSize } : {}),
  })
}

async function refuseSameDirectory(store: string, dir: string): Promise<void> {
  const [a, b] = await Promise.all([realpath(store).catch(() => store), realpath(dir).catch(() => dir)])
  if (a === b) throw new UsageError(`--to ${dir} is the store itself: give another directory`)
}

/** The local store as a copy source: its pointer first, then its files; each sent from disk as it is. */
export async function readLocalStore(store: string): Promise<CopySource> {
  const layout = new StoreLayout(store)
  const pointerBytes = await readFile(layout.latest).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null
    throw asSnapshotError(err, `reading ${layout.latest}`)
  })
  if (!pointerBytes) throw new NoSnapshotError(`${store} has no snapshot yet (no latest.json): nothing to publish`)
  const view = viewOf(pointerBytes)
  if (!view) throw new NoSnapshotError(`${layout.latest} is not a readable pointer: nothing to publish`)
  const objects = await listDir(layout, 'objects', /^[0-9a-f]{64}\.[a-z.]+$/)
  const records = await listDir(layout, 'snapshots', /^\d+\.json$/)
  return {
    description: store,
    pointer: { bytes: pointerBytes, view },
    objects,
    records,
    send: (f, to) => to.putFile(f.path, layout.object(f.path), f.size),
  }
}

async function listDir(layout: StoreLayout, dir: 'objects' | 'snapshots', name: RegExp): Promise<StoreFile[]> {
  const names = await readdir(layout.object(dir)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[]
    throw asSnapshotError(err, `listing ${layout.object(dir)}`)
  })
  const out: StoreFile[] = []
  for (const n of names.filter((x) => name.test(x)).sort()) {
    const st = await lstat(layout.object(`${dir}/${n}`)).catch(() => null)
    if (st?.isFile()) out.push({ path: `${dir}/${n}`, size: st.size })
  }
  return out
}
