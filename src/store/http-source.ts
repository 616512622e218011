import { rm } from 'node:fs/promises'
import type { Request as GotRequest, Response as GotResponse } from 'got'
import { loadGot } from './load-got.js'
import { LengthMismatchError, NetworkError, ObjectMissingError, SnapshotError, TooLargeError, UsageError } from '../core/errors.js'
import { checkRelPath, type ObjectExpectation, type ObjectSource, type SourceOptions } from './object-source.js'
import { PartFile } from './part-file.js'
import { rememberedPointer, rememberPointer } from './pointer-memo.js'
import { LATEST } from './store-layout.js'
import type { RateLimiter } from './rate-limit.js'
import { DEFAULT_RETRIES, DEFAULT_RETRY_BASE_MS, StallWatchdog, TransientError, withRetries } from './transfer-retry.js'

/**
 * `--from URL`: the store over http(s), with got. An object lands in `dest.part` first; an
 * interrupted download resumes from the bytes already there (`Range: bytes=N-`, hashed again
 * from disk), so retries and re-runs never refetch what arrived. Why the retries and the stall
 * watchdog are ours and not got's: transfer-retry.ts.
 */
const DEFAULT_CONNECT_MS = 10_000
const DEFAULT_IDLE_MS = 30_000

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

export class HttpSource implements ObjectSource {
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
    this.description = shown(this.base)
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
      const known = relPath === LATEST ? rememberedPointer(url) : undefined
      if (known?.fresh) return known.bytes
      const ex = await this.request(url, { 'cache-control': 'no-cache', pragma: 'no-cache', ...(known ? { 'if-none-match': known.etag } : {}) })
      try {
        const status = ex.response.statusCode
        if (status === 304 && known) return known.bytes
        if (status === 404 || status === 410) return null
        if (status !== 200) throw statusError(url, ex.response)
        const declared = contentLength(ex.response)
        if (declared !== undefined && declared > maxBytes) throw new TooLargeError(shown(url), maxBytes)
        const parts: Buffer[] = []
        let total = 0
        for await (const chunk of ex.stream as AsyncIterable<Buffer>) {
          ex.watchdog.stop()
          await this.limiter?.consume(chunk.length, this.signal) // our own wait is no stall
          ex.watchdog.arm()
          total += chunk.length
          if (total > maxBytes) throw new TooLargeError(shown(url), maxBytes)
          parts.push(chunk)
        }
        const bytes = Buffer.concat(parts, total)
        if (relPath === LATEST) rememberPointer(url, headerValue(ex.response.headers.etag), bytes)
        return bytes
      } catch (err) {
        throw this.attemptError(err, ex.watchdog)
      } finally {
        finish(ex)
      }
    })
  }

  async fetchObject(relPath: string, dest: string, expect: ObjectExpectation, progress?: (bytes: number) => void): Promise<void> {
    const url = this.url(relPath)
    const part = new PartFile(dest, expect, shown(url))
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
          await acceptObjectResponse(ex.response, part, from, url)
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
          finish(ex)
        }
      })
    } finally {
      await part.close()
      if (part.size === 0) await rm(part.path, { force: true }) // nothing there worth resuming
    }
  }

  private url(relPath: string): URL {
    checkRelPath(relPath)
    return new URL(relPath, this.base)
  }

  /** One GET, resolved once the response headers are in, with the stall watchdog running. */
  private async request(url: URL, headers: Record<string, string>): Promise<Exchange> {
    const got = await loadGot()
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

  private withRetries<T>(url: URL, attempt: () => Promise<T>): Promise<T> {
    return withRetries(attempt, { retries: this.retries, baseMs: this.retryBaseMs, signal: this.signal, what: shown(url) })
  }
}

/** Status and headers of an object response; truncates the part when the server starts over. */
async function acceptObjectResponse(response: GotResponse, part: PartFile, from: number, url: URL): Promise<void> {
  const status = response.statusCode
  const length = part.expect.length
  if (status === 404 || status === 410) {
    throw new ObjectMissingError(`${shown(url)}: the object is missing from the store (HTTP ${status}); the store may be damaged or pruned`)
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
    throw new LengthMismatchError(`${shown(url)} (Content-Length ${declared} from byte ${part.size})`, length, part.size + declared)
  }
}

function finish(ex: Exchange): void {
  ex.watchdog.stop()
  if (!ex.stream.destroyed) ex.stream.destroy()
}

/** The URL for messages: its password hidden. */
function shown(url: URL): string {
  const copy = new URL(url)
  if (copy.password) copy.password = '***'
  return copy.href
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
  return new NetworkError(`${shown(url)}: ${message}${hint}`)
}

function retryAfterMs(value: string | undefined): number | undefined {
  if (!value) return undefined
  if (/^\d+$/.test(value)) return Number(value) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined
}
