import { createReadStream } from 'node:fs'
import { lstat, readFile } from 'node:fs/promises'
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { asSnapshotError } from '../core/errors.js'
import { getSmallObject, listRemote, s3Failure } from '../store/s3-client.js'
import { describeS3, s3Key, type S3Location } from '../store/s3-location.js'
import type { PutOutcome, StoreDestination } from './store-destination.js'

/** Objects and records are written once and named by content or id: a CDN may keep them forever. */
export const IMMUTABLE_CACHE = 'public, max-age=31536000, immutable'
/** A CDN revalidates the pointer on every request; replicas poll it, so it must never go stale. */
export const POINTER_CACHE = 'no-cache'
/** Objects from this size go up in parts (lib-storage): S3's own minimum part is 5 MiB. */
export const DEFAULT_PART_BYTES = 8 << 20
const LATEST = 'latest.json'

export interface S3DestinationOptions {
  readonly partBytes?: number
  /** Parts of one multipart upload in flight (at most 4). */
  readonly concurrency?: number
  /** ListObjectsV2 page size (default: the server's, 1000 on S3). */
  readonly pageSize?: number
}

/** A store under an S3 prefix: PutObject (multipart from partBytes), ListObjectsV2, DeleteObject. */
export class S3Destination implements StoreDestination {
  readonly description: string

  constructor(
    private readonly client: S3Client,
    private readonly to: S3Location,
    private readonly opts: S3DestinationOptions = {},
  ) {
    this.description = describeS3(to)
  }

  list(): Promise<Map<string, number>> {
    return listRemote(this.client, this.to, this.opts.pageSize ? { pageSize: this.opts.pageSize } : {})
  }

  readPointer(maxBytes: number): Promise<Buffer | null> {
    return getSmallObject(this.client, this.to, LATEST, maxBytes)
  }

  localPath(): null {
    return null
  }

  async putFile(relPath: string, file: string, size: number): Promise<PutOutcome> {
    const partBytes = this.opts.partBytes ?? DEFAULT_PART_BYTES
    const contentType = contentTypeOf(relPath)
    if (size < partBytes) {
      const bytes = await readFile(file).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return null
        throw asSnapshotError(err, `reading ${file}`)
      })
      if (!bytes) return 'vanished'
      await this.put(relPath, bytes, IMMUTABLE_CACHE, contentType)
      return 'put'
    }
    const st = await lstat(file).catch(() => null)
    if (!st) return 'vanished'
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.to.bucket, Key: s3Key(this.to, relPath), Body: createReadStream(file), CacheControl: IMMUTABLE_CACHE, ContentType: contentType },
      partSize: partBytes,
      queueSize: Math.max(1, Math.min(4, this.opts.concurrency ?? 4)),
      leavePartsOnError: false, // abort the multipart upload: no orphaned parts billed
    })
    try {
      await upload.done()
    } catch (err) {
      throw s3Failure(err, `uploading ${describeS3(this.to, relPath)}`)
    }
    return 'multipart'
  }

  putBytes(relPath: string, bytes: Buffer): Promise<void> {
    return this.put(relPath, bytes, IMMUTABLE_CACHE, contentTypeOf(relPath))
  }

  putPointer(bytes: Buffer): Promise<void> {
    return this.put(LATEST, bytes, POINTER_CACHE, 'application/json')
  }

  async delete(relPath: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.to.bucket, Key: s3Key(this.to, relPath) }))
    } catch (err) {
      throw s3Failure(err, `deleting ${describeS3(this.to, relPath)}`)
    }
  }

  close(): void {
    this.client.destroy()
  }

  private async put(relPath: string, bytes: Buffer, cacheControl: string, contentType: string): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.to.bucket, Key: s3Key(this.to, relPath), Body: bytes, ContentLength: bytes.length, CacheControl: cacheControl, ContentType: contentType }))
    } catch (err) {
      throw s3Failure(err, `uploading ${describeS3(this.to, relPath)}`)
    }
  }
}

function contentTypeOf(relPath: string): string {
  return relPath.endsWith('.json') ? 'application/json' : 'application/octet-stream'
}
