import type { RateLimiter } from './rate-limit.js'
import type { S3Client } from '@aws-sdk/client-s3'
import { setTimeout as sleep } from 'node:timers/promises'
import { LengthMismatchError, NetworkError, SnapshotError } from '../core/errors.js'
import type { S3ConnectOptions } from './s3-client.js'
import { describeS3, parseS3Url, s3Key, type S3Location } from './s3-location.js'
import { checkRelPath, type ObjectExpectation, type ObjectSource, type SourceOptions } from './object-source.js'
import { PartFile } from './part-file.js'
import { DEFAULT_RETRIES, DEFAULT_RETRY_BASE_MS, retryDelayMs } from './transfer-retry.js'

/**
 * `--from s3://BUCKET/PREFIX`: a private bucket read with signed GetObject requests (credentials
 * from the SDK's default chain). Same contract as the HTTP source: an object lands at `dest` only
 * when its length and sha256 equal the signed pointer's, never a byte beyond the declared length
 * is accepted, and a body cut off mid-way resumes with `Range: bytes=N-` from what is on disk.
 * The SDK retries a failed request itself; this loop retries a body that breaks after the headers.
 * The SDK is loaded on first use: every other command (and every http:// pull) starts without it.
 */
export class S3Source implements ObjectSource {
  readonly description: string
  private readonly location: S3Location
  private readonly connect: S3ConnectOptions
  private sdk: Promise<{ client: S3Client; s3: typeof import('./s3-client.js'); GetObjectCommand: typeof import('@aws-sdk/client-s3').GetObjectCommand }> | undefined
  private readonly retries: number
  private readonly retryBaseMs: number
  private readonly signal: AbortSignal | undefined
  private readonly limiter: RateLimiter | undefined

  constructor(from: string, opts: SourceOptions & { s3?: S3ConnectOptions } = {}) {
    this.location = parseS3Url(from, '--from')
    this.description = describeS3(this.location)
    this.retries = opts.retries ?? DEFAULT_RETRIES
    this.retryBaseMs = opts.retryBaseMs ?? DEFAULT_RETRY_BASE_MS
    this.signal = opts.signal
    this.limiter = opts.limiter
    this.connect = { ...opts.s3, maxAttempts: this.retries + 1, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) }
  }

  private load() {
    this.sdk ??= (async () => {
      const [s3, { GetObjectCommand }] = await Promise.all([import('./s3-client.js'), import('@aws-sdk/client-s3')])
      return { client: s3.makeS3Client(this.connect), s3, GetObjectCommand }
    })()
    return this.sdk
  }

  async getSmall(relPath: string, maxBytes: number): Promise<Buffer | null> {
    checkRelPath(relPath)
    const { client, s3 } = await this.load()
    return s3.getSmallObject(client, this.location, relPath, maxBytes, this.signal)
  }

  async fetchObject(relPath: string, dest: string, expect: ObjectExpectation, progress?: (bytes: number) => void): Promise<void> {
    checkRelPath(relPath)
    const what = describeS3(this.location, relPath)
    const { s3 } = await this.load()
    const part = new PartFile(dest, expect, what)
    let keep = true
    try {
      for (let attempt = 1; ; attempt++) {
        const from = await part.open(keep)
        keep = true
        if (from === expect.length && !part.mismatch()) return await part.publish()
        if (from === expect.length) await part.restart()
        try {
          await this.download(relPath, part, what, progress)
          const bad = part.mismatch()
          if (bad) {
            await part.discard()
            // Bytes kept from an earlier attempt may be the bad ones: one clean download decides.
            if (from > 0 && attempt <= this.retries) {
              keep = false
              continue
            }
            throw bad
          }
          return await part.publish()
        } catch (err) {
          if (err instanceof SnapshotError || attempt > this.retries || this.signal?.aborted) {
            if (!(err instanceof NetworkError) && !this.signal?.aborted) await part.discard()
            throw err instanceof SnapshotError ? err : s3.s3Failure(err, `reading ${what}`)
          }
          await sleep(retryDelayMs(attempt, this.retryBaseMs), undefined, this.signal ? { signal: this.signal } : {}).catch(() => {
            throw this.signal?.reason
          })
        }
      }
    } finally {
      await part.close()
    }
  }

  /** One GetObject from the part's size on; a transport failure mid-body is thrown raw (retried). */
  private async download(relPath: string, part: PartFile, what: string, progress?: (bytes: number) => void): Promise<void> {
    const from = part.size
    const length = part.expect.length
    const { client, s3, GetObjectCommand } = await this.load()
    let out
    try {
      out = await client.send(
        new GetObjectCommand({ Bucket: this.location.bucket, Key: s3Key(this.location, relPath), ...(from > 0 ? { Range: `bytes=${from}-` } : {}) }),
        this.signal ? { abortSignal: this.signal } : {},
      )
    } catch (err) {
      if (s3.isNotFound(err)) throw new NetworkError(`${what}: the object is missing from the bucket; the store may be damaged or pruned`, { cause: err })
      throw s3.s3Failure(err, `reading ${what}`) // the SDK has already retried what is worth retrying
    }
    const body = out.Body as (AsyncIterable<Uint8Array> & { destroy?: () => void }) | undefined
    try {
      if (from > 0) {
        const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(out.ContentRange ?? '')
        if (!range || Number(range[1]) !== from || Number(range[3]) !== length) {
          if (out.ContentRange === undefined && out.ContentLength === length) await part.restart() // the whole object came back
          else throw new LengthMismatchError(`${what} (Content-Range ${out.ContentRange ?? 'none'} from byte ${from})`, length, Number(range?.[3] ?? -1))
        }
      }
      if (out.ContentLength !== undefined && part.size + out.ContentLength > length) {
        throw new LengthMismatchError(`${what} (Content-Length ${out.ContentLength} from byte ${part.size})`, length, part.size + out.ContentLength)
      }
      for await (const chunk of body ?? []) {
        await this.limiter?.consume(chunk.byteLength, this.signal) // --limit-rate counts every source's bytes
        await part.append(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
        progress?.(part.size)
      }
      if (part.size < length) throw new Error(`the body ended after ${part.size} of ${length} bytes`)
    } finally {
      body?.destroy?.()
    }
  }
}
