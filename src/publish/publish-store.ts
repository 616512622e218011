import { createReadStream } from 'node:fs'
import { lstat, readdir, readFile } from 'node:fs/promises'
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { NoSnapshotError, asSnapshotError } from '../core/errors.js'
import { openEnvelope, parsePointerPayload } from '../core/pointer.js'
import { crashPoint } from '../fs/crash-points.js'
import { getSmallObject, listRemote, s3Failure } from '../store/s3-client.js'
import { describeS3, s3Key, type S3Location } from '../store/s3-location.js'
import { StoreLayout } from '../store/store-layout.js'
import { forEachBounded } from '../core/bounded-pool.js'
import { DEFAULT_CONCURRENCY, LATEST, planPublish, type PointerView, type PublishPlan, type StoreFile } from './publish-plan.js'

/**
 * `snapshot publish`: mirrors a store into a bucket in the order publish-plan.ts chooses. Reads
 * the local pointer before listing the local objects, so the pointer it uploads only names objects
 * that the listing saw (a build running meanwhile adds files it will not name). Takes no lock:
 * a local prune that removes a file mid-publish only removes what the captured pointer no longer
 * needs, and that file is then skipped.
 */
export const IMMUTABLE_CACHE = 'public, max-age=31536000, immutable'
/** A CDN revalidates the pointer on every request; replicas poll it, so it must never go stale. */
export const POINTER_CACHE = 'no-cache'
/** Objects from this size go up in parts (lib-storage): S3's own minimum part is 5 MiB. */
export const DEFAULT_PART_BYTES = 8 << 20

export interface PublishOptions {
  readonly store: string
  readonly to: S3Location
  readonly client: S3Client
  readonly concurrency?: number
  readonly partBytes?: number
  /** Delete from the bucket what the local store no longer has (default true). */
  readonly prune?: boolean
  readonly force?: boolean
  /** ListObjectsV2 page size (default: the server's, 1000 on S3). */
  readonly pageSize?: number
  readonly log?: (line: string) => void
}

export interface PublishResult {
  readonly to: string
  readonly id: number
  readonly uploaded: { readonly objects: number; readonly records: number; readonly pointer: boolean; readonly bytes: number; readonly multipart: number }
  readonly skipped: number
  readonly deleted: readonly string[]
  readonly held: readonly string[]
  /** Local files that vanished (a prune ran) between the listing and their upload. */
  readonly vanished: number
  readonly seconds: number
}

const POINTER_MAX_BYTES = 4 << 20

export async function publishStore(opts: PublishOptions): Promise<PublishResult> {
  const started = process.hrtime.bigint()
  const log = opts.log ?? (() => undefined)
  const layout = new StoreLayout(opts.store)
  const where = describeS3(opts.to)

  const pointerBytes = await readFile(layout.latest).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null
    throw asSnapshotError(err, `reading ${layout.latest}`)
  })
  if (!pointerBytes) throw new NoSnapshotError(`${opts.store} has no snapshot yet (no latest.json): nothing to publish`)
  const localView = viewOf(pointerBytes)
  if (!localView) throw new NoSnapshotError(`${layout.latest} is not a readable pointer: nothing to publish`)
  const objects = await listDir(layout, 'objects', /^[0-9a-f]{64}\.[a-z.]+$/)
  const records = await listDir(layout, 'snapshots', /^\d+\.json$/)

  const remote = await listRemote(opts.client, opts.to, opts.pageSize ? { pageSize: opts.pageSize } : {})
  const remoteBytes = remote.has(LATEST) ? await getSmallObject(opts.client, opts.to, LATEST, POINTER_MAX_BYTES) : null
  const remoteView = remoteBytes ? viewOf(remoteBytes) : null
  if (remoteBytes && !remoteView) log(`warning: ${where}${LATEST} is not a pointer this tool can read: nothing will be deleted from the bucket`)

  const plan: PublishPlan = planPublish({
    local: { objects, records, pointer: { bytes: pointerBytes, view: localView } },
    remote,
    remotePointer: remoteBytes ? { bytes: remoteBytes, view: remoteView } : null,
    prune: opts.prune ?? true,
    force: opts.force ?? false,
  })
  log(`publishing snapshot ${localView.id} to ${where}: ${plan.objects.length} objects and ${plan.records.length} records to send, ${plan.skipped} already there`)

  const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY
  const partBytes = opts.partBytes ?? DEFAULT_PART_BYTES
  const sent = { bytes: 0, multipart: 0, vanished: 0 }
  const send = async (f: StoreFile): Promise<void> => {
    const r = await uploadFile(opts.client, opts.to, layout.object(f.path), f, IMMUTABLE_CACHE, partBytes, concurrency)
    if (r === 'vanished') sent.vanished++
    else {
      sent.bytes += f.size
      if (r === 'multipart') sent.multipart++
    }
    crashPoint('publish:object')
  }
  await forEachBounded(plan.objects, concurrency, send)
  await forEachBounded(plan.records, concurrency, send)
  if (plan.pointer) {
    crashPoint('publish:pointer')
    await putBytes(opts.client, opts.to, LATEST, pointerBytes, POINTER_CACHE, 'application/json')
    log(`${where}${LATEST} now names snapshot ${localView.id}`)
  }
  const deleted: string[] = []
  const remove = async (key: string): Promise<void> => {
    try {
      await opts.client.send(new DeleteObjectCommand({ Bucket: opts.to.bucket, Key: s3Key(opts.to, key) }))
    } catch (err) {
      throw s3Failure(err, `deleting ${describeS3(opts.to, key)}`)
    }
    deleted.push(key)
  }
  // Delete only under the pointer this publish put there (or found there): if another publisher
  // moved it meanwhile, what it names is unknown here, so nothing goes this time.
  let deletes = plan.deletes
  if (deletes.length > 0) {
    const now = await getSmallObject(opts.client, opts.to, LATEST, POINTER_MAX_BYTES)
    if (!now?.equals(pointerBytes)) {
      log(`warning: ${where}${LATEST} changed during this publish (another publisher?): nothing deleted this time`)
      deletes = []
    }
  }
  // Records before their objects, as a local prune does: a crash in between leaves unreferenced
  // objects (deleted next time), never a record that names a missing object.
  await forEachBounded(deletes.filter((k) => k.startsWith('snapshots/')), concurrency, remove)
  await forEachBounded(deletes.filter((k) => !k.startsWith('snapshots/')), concurrency, remove)
  if (deleted.length > 0) log(`deleted ${deleted.length} keys the store no longer has`)
  if (plan.held.length > 0) log(`kept ${plan.held.length} keys the store no longer has, because a pointer in the bucket still names them (the next publish removes them)`)
  return {
    to: where,
    id: localView.id,
    uploaded: { objects: plan.objects.length - sent.vanished, records: plan.records.length, pointer: plan.pointer, bytes: sent.bytes, multipart: sent.multipart },
    skipped: plan.skipped,
    deleted: deleted.sort(),
    held: plan.held,
    vanished: sent.vanished,
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
  }
}

/** The pointer's id and chain, read without a signature check: only to know what it names. */
function viewOf(bytes: Buffer): PointerView | null {
  try {
    const p = parsePointerPayload(openEnvelope(bytes, []))
    return { id: p.latest.id, chain: p.chain }
  } catch {
    return null
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

async function uploadFile(client: S3Client, to: S3Location, file: string, f: StoreFile, cacheControl: string, partBytes: number, concurrency: number): Promise<'put' | 'multipart' | 'vanished'> {
  const contentType = f.path.endsWith('.json') ? 'application/json' : 'application/octet-stream'
  if (f.size < partBytes) {
    const bytes = await readFile(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null
      throw asSnapshotError(err, `reading ${file}`)
    })
    if (!bytes) return 'vanished'
    await putBytes(client, to, f.path, bytes, cacheControl, contentType)
    return 'put'
  }
  const st = await lstat(file).catch(() => null)
  if (!st) return 'vanished'
  const upload = new Upload({
    client,
    params: { Bucket: to.bucket, Key: s3Key(to, f.path), Body: createReadStream(file), CacheControl: cacheControl, ContentType: contentType },
    partSize: partBytes,
    queueSize: Math.max(1, Math.min(4, concurrency)),
    leavePartsOnError: false, // abort the multipart upload: no orphaned parts billed
  })
  try {
    await upload.done()
  } catch (err) {
    throw s3Failure(err, `uploading ${describeS3(to, f.path)}`)
  }
  return 'multipart'
}

async function putBytes(client: S3Client, to: S3Location, relPath: string, bytes: Buffer, cacheControl: string, contentType: string): Promise<void> {
  try {
    await client.send(new PutObjectCommand({ Bucket: to.bucket, Key: s3Key(to, relPath), Body: bytes, ContentLength: bytes.length, CacheControl: cacheControl, ContentType: contentType }))
  } catch (err) {
    throw s3Failure(err, `uploading ${describeS3(to, relPath)}`)
  }
}

