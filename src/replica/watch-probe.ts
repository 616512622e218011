/**
 * How `pull --watch` learns that a new pointer was published, cheaply, without pulling:
 * - over HTTP, a conditional GET of `latest.json` (If-None-Match: the last handled ETag), so an
 *   unchanged pointer costs one 304 without a body. With a wait hint (`?wait=S`) `snapshot serve`
 *   holds the request until the pointer changes or S seconds pass, and says so in the
 *   `Snapshot-Long-Poll` response header; a static host ignores the query and answers at once;
 * - from a local directory, the pointer file's stat (inode, size, mtime in ns);
 * - from any other source, the pointer's bytes (a GET each time, compared by digest).
 * Each check is one request and no retry: the watch loop owns backoff and logging.
 */
import { createHash } from 'node:crypto'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { UsageError } from '../core/errors.js'
import type { ObjectSource } from '../store/object-source.js'
import { loadGot } from '../store/load-got.js'
import { openSource } from '../store/open-source.js'
import { forgetPointer, rememberPointer } from '../store/pointer-memo.js'
import { ENVELOPE_MAX_BYTES } from '../store/store-client.js'
import { LATEST } from '../store/store-layout.js'
import type { ProbeResult } from './watch-policy.js'

/** The header by which `snapshot serve` says it held a long-poll (its value: the seconds granted). */
export const LONG_POLL_HEADER = 'snapshot-long-poll'

export interface PointerProbe {
  readonly description: string
  /** One check. Never throws for the store's failures: they come back as `{ kind: 'error' }`. */
  check(ifNoneMatch: string | null, signal: AbortSignal): Promise<ProbeResult>
  /** Drops kept-alive connections, so that the process can exit. */
  close(): void
}

export interface ProbeOptions {
  token?: string
  /** Connect timeout, and how long a response may take beyond the wait. Default 10 s. */
  timeoutMs?: number
  /** The long-poll hint sent to the server, in seconds; 0 sends none. Default 0. */
  waitSeconds?: number
}

export function openProbe(from: string, opts: ProbeOptions = {}): PointerProbe {
  if (/^https?:\/\//i.test(from)) return new HttpProbe(from, opts)
  if (/^file:\/\//i.test(from)) return new StatProbe(fileURLToPath(from))
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(from)) return new BytesProbe(openSource(from, { ...(opts.token ? { token: opts.token } : {}), retries: 0 }))
  return new StatProbe(from)
}

function digestOf(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex')
}

function messageOf(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | undefined
  const code = typeof e?.code === 'string' ? `${e.code}: ` : ''
  return `${code}${typeof e?.message === 'string' ? e.message : String(err)}`
}

class HttpProbe implements PointerProbe {
  readonly description: string
  private readonly url: URL
  private readonly token: string | undefined
  private readonly timeoutMs: number
  private readonly waitSeconds: number
  // Our own agents: the probe's one kept-alive connection is ours to close at the end.
  private readonly agents = { http: new HttpAgent({ keepAlive: true, maxSockets: 1 }), https: new HttpsAgent({ keepAlive: true, maxSockets: 1 }) }

  constructor(from: string, opts: ProbeOptions) {
    let base: URL
    try {
      base = new URL(from.endsWith('/') ? from : `${from}/`)
    } catch (err) {
      throw new UsageError(`--from ${from}: not a valid URL`, { cause: err })
    }
    this.url = new URL(LATEST, base)
    this.waitSeconds = opts.waitSeconds ?? 0
    if (this.waitSeconds > 0) this.url.searchParams.set('wait', String(this.waitSeconds))
    const shown = new URL(this.url)
    if (shown.password) shown.password = '***'
    this.description = shown.href
    this.token = opts.token
    this.timeoutMs = opts.timeoutMs ?? 10_000
  }

  async check(ifNoneMatch: string | null, signal: AbortSignal): Promise<ProbeResult> {
    const got = await loadGot()
    const stream = got.stream(this.url, {
      headers: {
        ...(ifNoneMatch !== null ? { 'if-none-match': ifNoneMatch } : {}),
        'cache-control': 'no-cache',
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      agent: this.agents,
      decompress: false,
      cache: false,
      throwHttpErrors: false,
      retry: { limit: 0 },
      signal,
      timeout: {
        lookup: this.timeoutMs,
        connect: this.timeoutMs,
        secureConnect: this.timeoutMs,
        // A held long-poll answers only after the wait.
        response: this.waitSeconds * 1000 + this.timeoutMs,
        read: this.timeoutMs,
      },
    })
    stream.on('error', () => undefined) // errors come through the awaits below
    try {
      const response = await new Promise<import('got').Response>((resolve, reject) => {
        stream.once('response', resolve)
        stream.once('error', reject)
      })
      const status = response.statusCode
      const held = response.headers[LONG_POLL_HEADER] !== undefined
      if (status === 304) return { kind: 'unchanged', held }
      if (status === 404 || status === 410) return { kind: 'absent' }
      if (status !== 200) {
        forgetPointer(this.url)
        return { kind: 'error', message: `HTTP ${status}${response.statusMessage ? ` ${response.statusMessage}` : ''}` }
      }
      const parts: Buffer[] = []
      let total = 0
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        total += chunk.length
        if (total > ENVELOPE_MAX_BYTES) return { kind: 'error', message: `the pointer is larger than ${ENVELOPE_MAX_BYTES} bytes` }
        parts.push(chunk)
      }
      const etag = typeof response.headers.etag === 'string' && response.headers.etag !== '' ? response.headers.etag : null
      const bytes = Buffer.concat(parts, total)
      rememberPointer(this.url, etag ?? undefined, bytes) // the pull that follows takes these bytes rather than ask again
      return { kind: 'fresh', version: { digest: digestOf(bytes), etag } }
    } catch (err) {
      forgetPointer(this.url) // the pull that follows must ask it, not take its last bytes as an answer
      return { kind: 'error', message: messageOf(err) }
    } finally {
      if (!stream.destroyed) stream.destroy()
    }
  }

  close(): void {
    this.agents.http.destroy()
    this.agents.https.destroy()
  }
}

/** A local store: the pointer is replaced by rename, so a new inode (or size, or mtime) is a new pointer. */
class StatProbe implements PointerProbe {
  readonly description: string
  private readonly file: string

  constructor(dir: string) {
    this.file = join(dir, LATEST)
    this.description = this.file
  }

  async check(ifNoneMatch: string | null): Promise<ProbeResult> {
    try {
      const st = await stat(this.file, { bigint: true })
      const tag = `${st.ino.toString(36)}-${st.size.toString(36)}-${st.mtimeNs.toString(36)}`
      if (tag === ifNoneMatch) return { kind: 'unchanged', held: false }
      const bytes = await readFile(this.file)
      return { kind: 'fresh', version: { digest: digestOf(bytes), etag: tag } }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return { kind: 'absent' }
      return { kind: 'error', message: messageOf(err) }
    }
  }

  close(): void {}
}

/** Any other source: no validator to send, so the bytes themselves say whether it changed. */
class BytesProbe implements PointerProbe {
  readonly description: string

  constructor(private readonly source: ObjectSource) {
    this.description = source.description
  }

  async check(): Promise<ProbeResult> {
    try {
      const bytes = await this.source.getSmall(LATEST, ENVELOPE_MAX_BYTES)
      if (bytes === null) return { kind: 'absent' }
      return { kind: 'fresh', version: { digest: digestOf(bytes), etag: null } }
    } catch (err) {
      return { kind: 'error', message: messageOf(err) }
    }
  }

  close(): void {}
}
