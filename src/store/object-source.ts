/**
 * Where a replica reads the store from: `--from URL` (HttpSource, got) or `--from DIR` (DirSource).
 * Both hand over an immutable object only once its length and sha256 equal what the signed
 * pointer declares, and neither ever accepts more bytes than declared (endless-data attack).
 *
 * An object lands in `dest.part` first. Over HTTP an interrupted download resumes from the bytes
 * already there (`Range: bytes=N-`, hashed again from disk), so retries and re-runs never refetch
 * what arrived. The finished part is flushed, renamed onto `dest` and the directory flushed.
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream, statSync } from 'node:fs'
import { open, rename, rm, type FileHandle } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import got, { type Request as GotRequest, type Response as GotResponse } from 'got'
import {
  ChecksumMismatchError,
  LengthMismatchError,
  NetworkError,
  ObjectMissingError,
  SnapshotError,
  TooLargeError,
  UnsafeArchiveError,
  UsageError,
  VerifyError,
  asSnapshotError,
} from '../core/errors.js'
import { crashPoint } from '../fs/crash-points.js'
import { fsyncDir } from '../fs/durable.js'
import type { S3ConnectOptions } from './s3-client.js'
import { isS3Url } from './s3-location.js'
import { S3Source } from './s3-source.js'
import type { RateLimiter } from './rate-limit.js'

export interface ObjectSource {
  /** The URL (password hidden) or directory, for messages. */
  readonly description: string
  /** Small mutable files (latest.json, snapshots/<id>.json): fetched fresh (no cache), refused if larger than maxBytes. Returns null on 404 / ENOENT. */
  getSmall(relPath: string, maxBytes: number): Promise<Buffer | null>
  /**
   * Immutable object: lands at `dest` only if its length and sha256 equal the expected ones.
   * `progress` gets the bytes of this object on disk so far (back to 0 if a download restarts).
   */
  fetchObject(relPath: string, dest: string, expect: ObjectExpectation, progress?: (bytes: number) => void): Promise<void>
}

export interface ObjectExpectation {
  sha256: string
  length: number
}

export interface SourceOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string
  /** `idle`: no bytes for this long is a stall, aborted and retried. Defaults 10 s and 30 s. */
  timeoutMs?: { connect: number; idle: number }
  /** Retries after the first attempt, on network errors, stalls, 408, 429 and 5xx. Default 5. */
  retries?: number
  /** First backoff; it doubles per retry, with jitter, up to 10 s. Default 500 ms. */
  retryBaseMs?: number
  signal?: AbortSignal
  /** `--limit-rate`: every body byte counts against it, over all objects, retries and resumes. */
  limiter?: RateLimiter
}

const DEFAULT_CONNECT_MS = 10_000
const DEFAULT_IDLE_MS = 30_000
const DEFAULT_RETRIES = 5
const DEFAULT_RETRY_BASE_MS = 500
const RETRY_CAP_MS = 10_000

/** http(s):// (or s3://, file://, or a plain path) to the matching source. */
export function openSource(from: string, opts: SourceOptions & { s3?: S3ConnectOptions } = {}): ObjectSource {
  if (/^https?:\/\//i.test(from)) return new HttpSource(from, opts)
  if (isS3Url(from)) return new S3Source(from, opts)
  if (/^file:\/\//i.test(from)) return new DirSource(fileURLToPath(from), opts.limiter)
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(from)) throw new UsageError(`--from ${from}: expected an http(s):// or s3:// URL, or a directory`)
  return new DirSource(from, opts.limiter)
}

/**
 * Backoff before retry number `attempt` (1-based): exponential from `baseMs`, capped, with
 * jitter in the upper half so that ten replicas knocked off at once do not return in step.
 */
export function retryDelayMs(attempt: number, baseMs: number, capMs = RETRY_CAP_MS, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(ceiling / 2 + (random() * ceiling) / 2)
}

/**
 * Store paths come from signed manifests, but are still only ever plain relative segments:
 * nothing absolute, no `..`, no dot-files, nothing that a URL or a path would read differently.
 */
export function checkRelPath(relPath: string): string[] {
  const segments = relPath.split('/')
  if (relPath === '' || !segments.every((s) => /^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$/.test(s))) {
    throw new UnsafeArchiveError(`refusing the store path ${JSON.stringify(relPath)}: expected plain relative segments (no .., no absolute path)`)
  }
  return segments
}

/** A failure worth another attempt; what is on disk is kept for the resume. */
class TransientError extends Error {
  constructor(
    message: string,
    options: { cause?: unknown; retryAfterMs?: number | undefined; restart?: boolean } = {},
  ) {
    super(message, { cause: options.cause })
    this.retryAfterMs = options.retryAfterMs
    this.restart = options.restart ?? false
  }
  readonly retryAfterMs: number | undefined
  /** Throw away the partial file before the next attempt. */
  readonly restart: boolean
}

/**
 * The download target `dest + '.part'`: bytes are only appended, hashed as they are written, and
 * never beyond the declared length.
 */
export class PartFile {
  readonly path: string
  size = 0
  private handle: FileHandle | undefined
  private hash: Hash = createHash('sha256')

  constructor(
    readonly dest: string,
    readonly expect: ObjectExpectation,
    readonly what: string,
  ) {
    this.path = `${dest}.part`
  }

  /** Opens the part and returns how many bytes it holds: those kept from before if `keep`. */
  async open(keep: boolean): Promise<number> {
    await this.close()
    try {
      this.handle = await open(this.path, 'a+', 0o644) // append-only writes, reads anywhere
      const { size } = await this.handle.stat()
      this.hash = createHash('sha256')
      this.size = 0
      if (!keep || size > this.expect.length) {
        if (size > 0) await this.handle.truncate(0)
        return 0
      }
      const buf = Buffer.allocUnsafe(Math.min(size, 1 << 20))
      while (this.size < size) {
        const { bytesRead } = await this.handle.read(buf, 0, Math.min(buf.length, size - this.size), this.size)
        if (bytesRead === 0) break
        this.hash.update(buf.subarray(0, bytesRead))
        this.size += bytesRead
      }
      if (this.size < size) await this.handle.truncate(this.size)
      return this.size
    } catch (err) {
      throw asSnapshotError(err, `opening ${this.path}`)
    }
  }

  async restart(): Promise<void> {
    await this.requireHandle().truncate(0).catch((err: unknown) => {
      throw asSnapshotError(err, `truncating ${this.path}`)
    })
    this.hash = createHash('sha256')
    this.size = 0
  }

  /** Refuses, unwritten, any byte past the declared length. */
  async append(chunk: Buffer): Promise<void> {
    if (this.size + chunk.length > this.expect.length) {
      throw new LengthMismatchError(`${this.what} (more than declared, cut off)`, this.expect.length, this.size + chunk.length)
    }
    const handle = this.requireHandle()
    try {
      for (let done = 0; done < chunk.length; ) {
        done += (await handle.write(chunk, done, chunk.length - done)).bytesWritten
      }
    } catch (err) {
      throw asSnapshotError(err, `writing ${this.path}`)
    }
    this.hash.update(chunk)
    this.size += chunk.length
    crashPoint('download:chunk')
  }

  /** Once every byte is in: why the part is not the declared object, if it is not. */
  mismatch(): VerifyError | undefined {
    if (this.size !== this.expect.length) return new LengthMismatchError(this.what, this.expect.length, this.size)
    const actual = this.hash.copy().digest('hex')
    return actual === this.expect.sha256 ? undefined : new ChecksumMismatchError(this.what, this.expect.sha256, actual)
  }

  /** Flush, rename onto dest, flush the directory (FORMAT.md order; see src/fs/durable.ts). */
  async publish(): Promise<void> {
    const handle = this.requireHandle()
    try {
      await handle.sync()
      this.handle = undefined
      await handle.close()
      await rename(this.path, this.dest)
      fsyncDir(dirname(this.dest))
    } catch (err) {
      throw asSnapshotError(err, `saving ${this.dest}`)
    }
  }

  async close(): Promise<void> {
    const handle = this.handle
    this.handle = undefined
    await handle?.close().catch(() => undefined)
  }

  async discard(): Promise<void> {
    await this.close()
    await rm(this.path, { force: true })
  }

  private requireHandle(): FileHandle {
    if (!this.handle) throw new Error(`${this.path} is not open`) // a bug here, never the network
    return this.handle
  }
}

/** Aborts a request when no bytes arrive for `ms` (got's timeouts only cover getting headers). */
class StallWatchdog {
  fired = false
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly ms: number,
    private readonly onStall: () => void,
  ) {
    this.arm()
  }

  arm(): void {
    this.stop()
    this.timer = setTimeout(() => {
      this.fired = true
      this.onStall()
    }, this.ms)
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
  }
}

interface Exchange {
  stream: GotRequest
  response: GotResponse
  watchdog: StallWatchdog
}

/** TLS and redirect failures do not heal by themselves: retrying only delays the message. */
const FATAL_CODES = new Set([
  'ERR_TOO_MANY_REDIRECTS',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
])

class HttpSource implements ObjectSource {
  readonly description: string
  private readonly base: URL
  private readonly token: string | undefined
  private readonly connectMs: number
  private readonly idleMs: number
  private readonly retries: number
  private readonly retryBaseMs: number
  private readonly signal: AbortSignal | undefined
  private readonly limiter: RateLimiter | undefined

  constructor(from: string, opts: SourceOptions) {
    try {
      this.base = new URL(from.endsWith('/') ? from : `${from}/`)
    } catch (err) {
      throw new UsageError(`--from ${from}: not a valid URL`, { cause: err })
    }
    const shown = new URL(this.base)
    if (shown.password) shown.password = '***'
    this.description = shown.href
    this.token = opts.token
    this.connectMs = opts.timeoutMs?.connect ?? DEFAULT_CONNECT_MS
    this.idleMs = opts.timeoutMs?.idle ?? DEFAULT_IDLE_MS
    this.retries = opts.retries ?? DEFAULT_RETRIES
    this.retryBaseMs = opts.retryBaseMs ?? DEFAULT_RETRY_BASE_MS
    this.signal = opts.signal
    this.limiter = opts.limiter
  }

  async getSmall(relPath: string, maxBytes: number): Promise<Buffer | null> {
    const url = this.url(relPath)
    return this.withRetries(url, async () => {
      const ex = await this.request(url, { 'cache-control': 'no-cache', pragma: 'no-cache' })
      try {
        const status = ex.response.statusCode
        if (status === 404 || status === 410) return null
        if (status !== 200) throw statusError(url, ex.response)
        const declared = contentLength(ex.response)
        if (declared !== undefined && declared > maxBytes) throw new TooLargeError(this.shown(url), maxBytes)
        const parts: Buffer[] = []
        let total = 0
        for await (const chunk of ex.stream as AsyncIterable<Buffer>) {
          ex.watchdog.stop()
          await this.limiter?.consume(chunk.length, this.signal) // our own wait is no stall
          ex.watchdog.arm()
          total += chunk.length
          if (total > maxBytes) throw new TooLargeError(this.shown(url), maxBytes)
          parts.push(chunk)
        }
        return Buffer.concat(parts, total)
      } catch (err) {
        throw this.attemptError(err, ex.watchdog)
      } finally {
        this.finish(ex)
      }
    })
  }

  async fetchObject(relPath: string, dest: string, expect: ObjectExpectation, progress?: (bytes: number) => void): Promise<void> {
    const url = this.url(relPath)
    const what = this.shown(url)
    const part = new PartFile(dest, expect, what)
    let keep = true
    try {
      await this.withRetries(url, async () => {
        const resumeAt = await part.open(keep)
        keep = true
        if (resumeAt === expect.length) {
          // every byte is already here (a crash between the last write and the rename)
          if (!part.mismatch()) return part.publish()
          await part.restart()
        }
        const from = part.size
        const ex = await this.request(url, from > 0 ? { range: `bytes=${from}-` } : {})
        try {
          await this.acceptObjectResponse(ex.response, part, from, url)
          const resumed = part.size > 0 // not if the server answered a Range with the whole body
          for await (const chunk of ex.stream as AsyncIterable<Buffer>) {
            ex.watchdog.stop() // a slow disk is not a stalled server, nor is --limit-rate
            await this.limiter?.consume(chunk.length, this.signal)
            await part.append(chunk)
            ex.watchdog.arm()
            progress?.(part.size)
          }
          if (part.size < expect.length) {
            throw new TransientError(`the body ended after ${part.size} of ${expect.length} bytes`)
          }
          const bad = part.mismatch()
          if (bad) {
            await part.discard() // a corrupt part must never be resumed, even if we give up now
            // Bytes kept from an earlier attempt may be the bad ones: one clean download decides.
            if (resumed) throw new TransientError(bad.message, { cause: bad, restart: true })
            throw bad
          }
          await part.publish()
        } catch (err) {
          // Transient: keep the part for the resume. Fatal (refused, missing, disk full): leave
          // nothing behind. An abort keeps it too: the next run picks it up.
          const e = this.attemptError(err, ex.watchdog)
          if (e instanceof TransientError) keep = !e.restart
          else if (!this.signal?.aborted) await part.discard()
          throw e
        } finally {
          this.finish(ex)
        }
      })
    } finally {
      await part.close()
      if (part.size === 0) await rm(part.path, { force: true }) // nothing there worth resuming
    }
  }

  /** Status and headers of an object response; truncates the part when the server starts over. */
  private async acceptObjectResponse(response: GotResponse, part: PartFile, from: number, url: URL): Promise<void> {
    const status = response.statusCode
    const length = part.expect.length
    if (status === 404 || status === 410) {
      throw new ObjectMissingError(`${this.shown(url)}: the object is missing from the store (HTTP ${status}); the store may be damaged or pruned`)
    }
    if (status === 416 && from > 0) {
      throw new TransientError(`the server refused to resume at byte ${from} (HTTP 416)`, { restart: true })
    }
    if (status === 206) {
      const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(response.headers['content-range'] ?? ''))
      if (from === 0 || !range || Number(range[1]) !== from || Number(range[3]) !== length) {
        const seen = response.headers['content-range'] ?? 'none'
        throw new TransientError(`a 206 with Content-Range ${seen} does not continue byte ${from} of ${length}`, { restart: true })
      }
    } else if (status === 200) {
      if (from > 0) await part.restart() // the server ignored Range: take the whole body
    } else {
      throw statusError(url, response)
    }
    const declared = contentLength(response)
    if (declared !== undefined && part.size + declared > length) {
      throw new LengthMismatchError(`${this.shown(url)} (Content-Length ${declared} from byte ${part.size})`, length, part.size + declared)
    }
  }

  private url(relPath: string): URL {
    checkRelPath(relPath)
    return new URL(relPath, this.base)
  }

  private shown(url: URL): string {
    const copy = new URL(url)
    if (copy.password) copy.password = '***'
    return copy.href
  }

  /** One GET, resolved once the response headers are in, with the stall watchdog running. */
  private async request(url: URL, headers: Record<string, string>): Promise<Exchange> {
    const stream = got.stream(url, {
      headers: { ...headers, ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) },
      decompress: false, // bytes are hashed as stored
      cache: false,
      throwHttpErrors: false, // statuses are ours to judge
      retry: { limit: 0 }, // our own loop, because only it knows how to resume
      timeout: { lookup: this.connectMs, connect: this.connectMs, secureConnect: this.connectMs, response: this.idleMs },
    })
    stream.on('error', () => undefined) // errors reach us through the awaits below, not as events
    const watchdog = new StallWatchdog(this.idleMs, () => stream.destroy(new Error(`no data for ${this.idleMs} ms`)))
    const onAbort = (): void => void stream.destroy(new Error('aborted'))
    this.signal?.addEventListener('abort', onAbort, { once: true })
    stream.once('close', () => this.signal?.removeEventListener('abort', onAbort))
    try {
      const response = await new Promise<GotResponse>((resolveResponse, reject) => {
        stream.once('response', resolveResponse)
        stream.once('error', reject)
        if (this.signal?.aborted) onAbort()
      })
      return { stream, response, watchdog }
    } catch (err) {
      watchdog.stop()
      stream.destroy()
      throw this.attemptError(err, watchdog)
    }
  }

  private finish(ex: Exchange): void {
    ex.watchdog.stop()
    if (!ex.stream.destroyed) ex.stream.destroy()
  }

  /** Sorts what one attempt threw into: retry (TransientError), or give up (anything else). */
  private attemptError(err: unknown, watchdog: StallWatchdog): unknown {
    if (this.signal?.aborted) return this.signal.reason
    if (err instanceof TransientError || err instanceof SnapshotError) return err
    if (watchdog.fired) return new TransientError(`stalled: no data for ${this.idleMs} ms`, { cause: err })
    const code = (err as { code?: unknown } | undefined)?.code
    const detail = err instanceof Error ? err.message : String(err)
    if (typeof code === 'string' && FATAL_CODES.has(code)) return new NetworkError(`${this.description}: ${detail}`, { cause: err })
    return new TransientError(detail, { cause: err })
  }

  private async withRetries<T>(url: URL, attempt: () => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      try {
        return await attempt()
      } catch (err) {
        if (!(err instanceof TransientError)) throw err
        if (n > this.retries) {
          if (err.cause instanceof SnapshotError) throw err.cause
          throw new NetworkError(`${this.shown(url)}: ${err.message} (gave up after ${n} attempt${n === 1 ? '' : 's'})`, { cause: err.cause ?? err })
        }
        const delay = Math.min(RETRY_CAP_MS, Math.max(retryDelayMs(n, this.retryBaseMs), err.retryAfterMs ?? 0))
        await sleep(delay, undefined, this.signal ? { signal: this.signal } : {}).catch(() => {
          throw this.signal?.reason
        })
      }
    }
  }
}

function contentLength(response: GotResponse): number | undefined {
  const value = response.headers['content-length']
  return value === undefined || !/^\d+$/.test(value) ? undefined : Number(value)
}

/** 408, 429 and 5xx are worth another try; any other unexpected status is not. */
function statusError(url: URL, response: GotResponse): Error {
  const status = response.statusCode
  const message = `HTTP ${status}${response.statusMessage ? ` ${response.statusMessage}` : ''}`
  if (status === 408 || status === 429 || status >= 500) {
    return new TransientError(message, { retryAfterMs: retryAfterMs(response.headers['retry-after']) })
  }
  const hint = status === 401 || status === 403 ? ' (check --token / SNAPSHOT_TOKEN)' : ''
  const shown = new URL(url)
  if (shown.password) shown.password = '***'
  return new NetworkError(`${shown.href}: ${message}${hint}`)
}

function retryAfterMs(value: string | undefined): number | undefined {
  if (!value) return undefined
  if (/^\d+$/.test(value)) return Number(value) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}

class DirSource implements ObjectSource {
  readonly description: string
  private readonly root: string

  constructor(
    dir: string,
    private readonly limiter?: RateLimiter,
  ) {
    this.root = resolve(dir)
    this.description = dir
    let isDir = false
    try {
      isDir = statSync(this.root).isDirectory()
    } catch {
      // reported below
    }
    if (!isDir) throw new UsageError(`--from ${dir}: not a directory (give a store directory or an http(s):// URL)`)
  }

  async getSmall(relPath: string, maxBytes: number): Promise<Buffer | null> {
    const file = this.file(relPath)
    let handle: FileHandle
    try {
      handle = await open(file, 'r')
    } catch (err) {
      if (isMissing(err)) return null
      throw asSnapshotError(err, `reading ${file}`)
    }
    try {
      const parts: Buffer[] = []
      let total = 0
      for (;;) {
        const buf = Buffer.allocUnsafe(Math.min(64 * 1024, maxBytes + 1))
        const { bytesRead } = await handle.read(buf, 0, buf.length, null)
        if (bytesRead === 0) return Buffer.concat(parts, total)
        total += bytesRead
        if (total > maxBytes) throw new TooLargeError(file, maxBytes)
        parts.push(buf.subarray(0, bytesRead))
      }
    } catch (err) {
      throw asSnapshotError(err, `reading ${file}`)
    } finally {
      await handle.close()
    }
  }

  async fetchObject(relPath: string, dest: string, expect: ObjectExpectation, progress?: (bytes: number) => void): Promise<void> {
    const file = this.file(relPath)
    const part = new PartFile(dest, expect, file)
    try {
      await part.open(false) // a local copy is cheap enough to redo whole
      try {
        for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
          await this.limiter?.consume(chunk.length)
          await part.append(chunk)
          progress?.(part.size)
        }
      } catch (err) {
        if (err instanceof SnapshotError) throw err
        if (isMissing(err)) throw new ObjectMissingError(`${file}: the object is missing from the store; the store may be damaged or pruned`, { cause: err })
        throw asSnapshotError(err, `reading ${file}`)
      }
      const bad = part.mismatch()
      if (bad) throw bad
      await part.publish()
    } catch (err) {
      await part.discard()
      throw err
    }
  }

  private file(relPath: string): string {
    return join(this.root, ...checkRelPath(relPath))
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOENT' || code === 'ENOTDIR'
}
