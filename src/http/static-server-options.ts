/**
 * The options of the store's static server, their defaults, and their checks: a bad value is a
 * usage error before anything listens. The token is kept only as its sha256 (static-server.ts
 * compares digests in constant time).
 */
import { createHash } from 'node:crypto'
import { UsageError } from '../core/errors.js'

export interface StaticServerOptions {
  /** The store directory. */
  root: string
  /** Default 127.0.0.1: exposing the store is an explicit choice. */
  host?: string
  /** Default 0: any free port (see `RunningServer.port`). */
  port?: number
  /** When set, every request needs `Authorization: Bearer <token>`. */
  token?: string
  /** Gets one plain line per request: method, path, status, body bytes. */
  log?: (line: string) => void
  /** Time allowed to receive a request's headers. Default 10 s. */
  headersTimeoutMs?: number
  /**
   * Time allowed to receive a whole request. Our requests are bodiless GET/HEAD, so this only
   * bounds the request itself, never a long download. Default 30 s; must be >= headersTimeoutMs.
   */
  requestTimeoutMs?: number
  /** How long an idle keep-alive connection is kept open. Default 5 s. */
  keepAliveTimeoutMs?: number
  /**
   * A socket with no traffic either way for this long is destroyed: this is what drops a client
   * that stalls mid-download (its window fills, we stop writing, the socket goes quiet). Default 30 s.
   */
  idleTimeoutMs?: number
  /** close() lets in-flight responses finish for this long, then cuts them. Default 5 s. */
  closeGraceMs?: number
  /** Told each response's status and the bytes written for it, headers included (metrics). */
  onResponse?: (status: number, bytes: number) => void
  /**
   * Long-poll: `GET /latest.json?wait=S` with an If-None-Match that matches is held until the
   * pointer changes (200) or min(S, this) passes (304). Default 60 s; the idle timeout is
   * suspended while a request is held, since a held request is silent by design.
   */
  longPollMaxMs?: number
  /** At most this many held requests; beyond, a long-poll is answered at once. Default 1000. */
  longPollMaxHeld?: number
  /** How often the pointer is checked while requests are held. Default 200 ms. */
  longPollCheckMs?: number
  /**
   * A relay (http/mirror-hold.ts): how long a request for a file its mirror is copying may be
   * held. Default 20 s: below a replica's 30 s timeout, so it turns to the origin instead.
   */
  mirrorHoldMaxMs?: number
  /** How often a held request looks for its file. Default 25 ms. */
  mirrorHoldCheckMs?: number
  /** While a `mirror --watch` runs but copies nothing: how long a request waits for a copy to begin. Default 1 s. */
  mirrorHoldGraceMs?: number
}

export const STATIC_SERVER_DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  closeGraceMs: 5_000,
  longPollMaxMs: 60_000,
  longPollMaxHeld: 1_000,
  longPollCheckMs: 200,
  mirrorHoldMaxMs: 20_000,
  mirrorHoldCheckMs: 25,
  mirrorHoldGraceMs: 1_000,
} as const

export interface Resolved {
  options: Required<Omit<StaticServerOptions, 'token' | 'log' | 'onResponse'>>
  token: Buffer | undefined
  log: ((line: string) => void) | undefined
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v <= 0) throw new UsageError(`${name} must be a positive integer (got ${String(value)})`)
  return v
}

export function resolveOptions(opts: StaticServerOptions): Resolved {
  const d = STATIC_SERVER_DEFAULTS
  const port = opts.port ?? d.port
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`port must be an integer from 0 to 65535 (got ${String(opts.port)})`)
  }
  if (opts.token !== undefined && opts.token.length === 0) {
    throw new UsageError('the bearer token is empty; pass a real token or none')
  }
  const options = {
    root: opts.root,
    host: opts.host ?? d.host,
    port,
    headersTimeoutMs: positiveInt('headersTimeoutMs', opts.headersTimeoutMs, d.headersTimeoutMs),
    requestTimeoutMs: positiveInt('requestTimeoutMs', opts.requestTimeoutMs, d.requestTimeoutMs),
    keepAliveTimeoutMs: positiveInt('keepAliveTimeoutMs', opts.keepAliveTimeoutMs, d.keepAliveTimeoutMs),
    idleTimeoutMs: positiveInt('idleTimeoutMs', opts.idleTimeoutMs, d.idleTimeoutMs),
    closeGraceMs: positiveInt('closeGraceMs', opts.closeGraceMs, d.closeGraceMs),
    longPollMaxMs: positiveInt('longPollMaxMs', opts.longPollMaxMs, d.longPollMaxMs),
    longPollMaxHeld: positiveInt('longPollMaxHeld', opts.longPollMaxHeld, d.longPollMaxHeld),
    longPollCheckMs: positiveInt('longPollCheckMs', opts.longPollCheckMs, d.longPollCheckMs),
    mirrorHoldMaxMs: positiveInt('mirrorHoldMaxMs', opts.mirrorHoldMaxMs, d.mirrorHoldMaxMs),
    mirrorHoldCheckMs: positiveInt('mirrorHoldCheckMs', opts.mirrorHoldCheckMs, d.mirrorHoldCheckMs),
    mirrorHoldGraceMs: positiveInt('mirrorHoldGraceMs', opts.mirrorHoldGraceMs, d.mirrorHoldGraceMs),
  }
  if (options.headersTimeoutMs > options.requestTimeoutMs) {
    throw new UsageError(
      `headersTimeoutMs (${options.headersTimeoutMs}) must not exceed requestTimeoutMs (${options.requestTimeoutMs})`,
    )
  }
  const token = opts.token === undefined ? undefined : sha256(opts.token)
  return { options, token, log: opts.log }
}

export function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest()
}
