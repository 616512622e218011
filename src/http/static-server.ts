/**
 * The static HTTP server behind `snapshot serve`: a read-only view of the store directory.
 *
 * Only GET and HEAD; only paths made of conservative segments; never a dot-path, a `*.key` file or
 * anything a symlink leads to outside the store. `latest.json` (the one mutable file) is never
 * cached; content-named snapshots and objects are cached forever. Single byte ranges, ETag and
 * If-Range let a replica resume an interrupted download.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { constants as fsConstants, type BigIntStats, type Dirent } from 'node:fs'
import { lstat, open, readdir, realpath, stat, type FileHandle } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { isAbsolute, join, relative, sep } from 'node:path'
import { ExitCode, SnapshotError, UsageError, asSnapshotError } from '../core/errors.js'

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
}

export interface RunningServer {
  /** e.g. http://127.0.0.1:PORT */
  url: string
  port: number
  /**
   * Stops listening, answers held long-polls at once (304, Connection: close), drops idle
   * keep-alive sockets, cuts in-flight ones after the grace period.
   */
  close(): Promise<void>
  /** Long-poll requests held right now. */
  heldRequests(): number
}

/** A private key inside the directory we are about to publish: refuse rather than risk it. */
export class PrivateKeyInStoreError extends SnapshotError {
  override readonly code = 'ERR_PRIVATE_KEY_IN_STORE'
  override readonly exitCode = ExitCode.Refused
  constructor(file: string, why: string) {
    super(
      `refusing to serve the store: ${file} ${why}; move private keys out of the store directory ` +
        `(the master keeps its signing key outside what it publishes)`,
    )
  }
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
} as const

/** Sent with every long-poll answer the server held or could have held: its value is the seconds granted. */
export const LONG_POLL_HEADER = 'Snapshot-Long-Poll'

const IMMUTABLE = 'public, max-age=31536000, immutable'
const NO_CACHE = 'no-cache, max-age=0'
const SEGMENT = /^[A-Za-z0-9._-]+$/
const MAX_SEGMENTS = 8
const MAX_SEGMENT_LENGTH = 255
const OBJECT_NAME = /^[0-9a-f]{64}\.[A-Za-z0-9.]+$/
/** What a store holds for replicas (store-layout.ts, docs/FORMAT.md): nothing else is ever served. */
const SERVED_OBJECT = /^[0-9a-f]{64}\.(tar|manifest)\.zst$/
const SERVED_RECORD = /^(0|[1-9][0-9]{0,15})\.json$/
/** Anywhere in a file, any case: a key pasted after a comment or a bag attribute is a key still. */
const PRIVATE_KEY_PEM = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/i
const KEY_SCAN_CHUNK = 64 * 1024
const KEY_SCAN_MAX_DEPTH = 16
const KEY_SCAN_CONCURRENCY = 16

// ---------------------------------------------------------------------------------------------
// Pure helpers (exported for tests)

export type PathResult =
  | { kind: 'ok'; segments: string[] }
  | { kind: 'bad-request'; reason: string }
  | { kind: 'not-found'; reason: string }

/** A segment that exists in the charset but is never served: dot-names and key files. */
function isHiddenSegment(segment: string): boolean {
  return segment.startsWith('.') || segment.endsWith('.key')
}

/**
 * Turns a raw request target into store-relative segments, or says why not. Each raw segment is
 * decoded on its own, so `%2f`, `%5c`, `%00` and `%2e%2e` cannot change the path's shape; the
 * decoded segment must match a conservative charset, which also excludes `\`, NUL and spaces.
 */
export function parseRequestPath(target: string): PathResult {
  const q = target.indexOf('?')
  const path = q === -1 ? target : target.slice(0, q)
  if (!path.startsWith('/')) return { kind: 'bad-request', reason: 'not an origin-form path' }
  if (path === '/') return { kind: 'not-found', reason: 'no index' }
  const raw = path.slice(1).split('/')
  if (raw.length > MAX_SEGMENTS) return { kind: 'bad-request', reason: 'too many segments' }
  const segments: string[] = []
  let hidden = false
  for (const r of raw) {
    if (r === '') return { kind: 'bad-request', reason: 'empty segment' }
    let s: string
    try {
      s = decodeURIComponent(r)
    } catch {
      return { kind: 'bad-request', reason: 'invalid percent-encoding' }
    }
    if (s.length > MAX_SEGMENT_LENGTH || !SEGMENT.test(s)) {
      return { kind: 'bad-request', reason: 'forbidden characters' }
    }
    if (isHiddenSegment(s)) hidden = true
    segments.push(s)
  }
  // Checked after the whole path so `/.state/%ZZ` is still a 400, not a hint that .state exists.
  if (hidden) return { kind: 'not-found', reason: 'hidden path' }
  if (!isServedPath(segments)) return { kind: 'not-found', reason: 'not a path a store holds' }
  return { kind: 'ok', segments }
}

/**
 * The only paths a store holds for replicas: `latest.json`, `snapshots/<id>.json` and
 * `objects/<sha256>.(tar|manifest).zst`. A stray file (a key renamed, a backup, notes) is never
 * served, whatever its name.
 */
export function isServedPath(segments: readonly string[]): boolean {
  if (segments.length === 1) return segments[0] === 'latest.json'
  if (segments.length !== 2) return false
  const [dir, name] = segments as [string, string]
  return (dir === 'objects' && SERVED_OBJECT.test(name)) || (dir === 'snapshots' && SERVED_RECORD.test(name))
}

export type RangeResult =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' }

/**
 * RFC 9110 single byte range. A header we do not understand, or a multi-range, is ignored (full
 * 200, which the RFC allows); a well-formed range that misses the file is unsatisfiable (416).
 */
export function parseByteRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' }
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (!m) return { kind: 'full' }
  const [, first = '', last = ''] = m
  if (first === '' && last === '') return { kind: 'full' }
  if (first === '') {
    const suffix = Number(last)
    if (!Number.isSafeInteger(suffix)) return { kind: 'full' }
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  if (!Number.isSafeInteger(start)) return { kind: 'full' }
  let end = size - 1
  if (last !== '') {
    const requested = Number(last)
    if (!Number.isSafeInteger(requested)) return { kind: 'full' }
    if (requested < start) return { kind: 'full' } // invalid range-spec: ignore the header
    end = Math.min(requested, size - 1)
  }
  if (start >= size) return { kind: 'unsatisfiable' }
  return { kind: 'partial', start, end }
}

/** Strong validator from inode, size and mtime in nanoseconds: changes whenever the file does. */
export function etagFor(st: Pick<BigIntStats, 'ino' | 'size' | 'mtimeNs'>): string {
  return `"${st.ino.toString(36)}-${st.size.toString(36)}-${st.mtimeNs.toString(36)}"`
}

/** If-None-Match uses the weak comparison: `W/"x"` matches `"x"`. */
export function ifNoneMatchHits(header: string, etag: string): boolean {
  const strip = (t: string): string => (t.startsWith('W/') ? t.slice(2) : t)
  return header.split(',').some((t) => {
    const tag = t.trim()
    return tag === '*' || strip(tag) === strip(etag)
  })
}

/**
 * The wait a request asks for, in ms: only a GET of the root `latest.json` with `?wait=S` (whole
 * seconds) and an If-None-Match can be held; anything else, or a malformed hint, is 0 (answered
 * at once, as a static host would).
 */
export function longPollWaitMs(method: string, target: string, segments: readonly string[], ifNoneMatch: string | undefined, maxMs: number): number {
  if (method !== 'GET' || ifNoneMatch === undefined || segments.length !== 1 || segments[0] !== 'latest.json') return 0
  const q = target.indexOf('?')
  if (q === -1) return 0
  const wait = new URLSearchParams(target.slice(q + 1)).get('wait')
  if (wait === null || !/^\d{1,6}$/.test(wait)) return 0
  return Math.min(Number(wait) * 1000, maxMs)
}

export function contentTypeFor(name: string): string {
  if (name.endsWith('.json')) return 'application/json'
  if (name.endsWith('.zst')) return 'application/zstd'
  return 'application/octet-stream'
}

/** Only content-named files may be cached forever; everything else is revalidated. */
export function cacheControlFor(segments: readonly string[]): string {
  const [dir, name, ...rest] = segments
  if (rest.length === 0 && name !== undefined) {
    if (dir === 'objects' && OBJECT_NAME.test(name)) return IMMUTABLE
    if (dir === 'snapshots' && name.endsWith('.json')) return IMMUTABLE
  }
  return NO_CACHE
}

// ---------------------------------------------------------------------------------------------
// Startup check

/**
 * Refuses a store that holds a private key, by name (`*.key`) and by content (a PEM private key
 * block, any case, anywhere in the file), whatever else the file is called: a key renamed
 * `objects/k.KEY` or `objects/sub/renamed.pem` is still a key. Cheap at start: content-named
 * objects (the thousands, and large) are judged by their names, which are their sha256; every
 * other file is read. Dot-entries are skipped: never served (the master's `.state/` lives there).
 * Symlinks are not followed (a request re-checks where they lead).
 */
export async function assertNoPrivateKeys(root: string): Promise<void> {
  const toRead: string[] = []
  const walk = async (dir: string, rel: string, depth: number): Promise<void> => {
    let entries: Dirent[]
    try {
      entries = await readdir(dir, { withFileTypes: true })
    } catch (err) {
      throw asSnapshotError(err, `cannot list ${dir}`)
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue
      const relName = rel === '' ? e.name : `${rel}/${e.name}`
      if (e.name.toLowerCase().endsWith('.key')) throw new PrivateKeyInStoreError(relName, 'is named like a key file')
      if (e.isDirectory() && depth < KEY_SCAN_MAX_DEPTH) {
        await walk(join(dir, e.name), relName, depth + 1)
      } else if (e.isFile() && !(rel === 'objects' && SERVED_OBJECT.test(e.name))) {
        toRead.push(relName)
      }
    }
  }
  await walk(root, '', 0)

  let next = 0
  const worker = async (): Promise<void> => {
    while (next < toRead.length) {
      const relName = toRead[next++] as string
      if (await holdsPrivateKey(join(root, ...relName.split('/')))) {
        throw new PrivateKeyInStoreError(relName, 'holds a PEM private key')
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(KEY_SCAN_CONCURRENCY, toRead.length) }, worker))
}

/** Reads the whole file in chunks, keeping the tail of each so a marker cut in two is still seen. */
async function holdsPrivateKey(file: string): Promise<boolean> {
  let fh: FileHandle | undefined
  try {
    fh = await open(file, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0))
    if (!(await fh.stat()).isFile()) return false
    const buf = Buffer.alloc(KEY_SCAN_CHUNK)
    let tail = ''
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos)
      if (bytesRead === 0) return false
      pos += bytesRead
      const text = tail + buf.subarray(0, bytesRead).toString('latin1')
      if (PRIVATE_KEY_PEM.test(text)) return true
      tail = text.slice(-80)
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ELOOP') return false // removed while we scanned, or a symlink: not followed
    throw asSnapshotError(err, `cannot check ${file} for private keys`)
  } finally {
    await fh?.close()
  }
}

// ---------------------------------------------------------------------------------------------
// Server

interface Resolved {
  options: Required<Omit<StaticServerOptions, 'token' | 'log' | 'onResponse'>>
  token: Buffer | undefined
  log: ((line: string) => void) | undefined
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v <= 0) throw new UsageError(`${name} must be a positive integer (got ${String(value)})`)
  return v
}

function resolveOptions(opts: StaticServerOptions): Resolved {
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
  }
  if (options.headersTimeoutMs > options.requestTimeoutMs) {
    throw new UsageError(
      `headersTimeoutMs (${options.headersTimeoutMs}) must not exceed requestTimeoutMs (${options.requestTimeoutMs})`,
    )
  }
  const token = opts.token === undefined ? undefined : sha256(opts.token)
  return { options, token, log: opts.log }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest()
}

/** Constant time: both sides are hashed to 32 bytes first, so length leaks nothing either. */
function authorized(header: string | undefined, tokenDigest: Buffer): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '')
  const presented = sha256(m?.[1] ?? '')
  return timingSafeEqual(presented, tokenDigest) && m !== null
}

/** Keeps a log line on one line and printable, whatever the client sent. */
function printable(s: string): string {
  const clipped = s.length > 300 ? `${s.slice(0, 300)}...` : s
  return clipped.replace(/[^\x21-\x7e]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

export async function startStaticServer(opts: StaticServerOptions): Promise<RunningServer> {
  const { options, token, log } = resolveOptions(opts)

  let realRoot: string
  try {
    realRoot = await realpath(options.root)
    if (!(await stat(realRoot)).isDirectory()) throw new Error('not a directory')
  } catch (err) {
    throw new UsageError(`the store ${options.root} is not a readable directory`, { cause: err })
  }
  await assertNoPrivateKeys(realRoot)

  const server = createServer({
    headersTimeout: options.headersTimeoutMs,
    requestTimeout: options.requestTimeoutMs,
    keepAliveTimeout: options.keepAliveTimeoutMs,
    // Node only checks headers/request timeouts this often (default 30 s): keep them meaningful.
    connectionsCheckingInterval: Math.min(1_000, options.headersTimeoutMs),
  })
  // With no 'timeout' listener anywhere, Node destroys the socket: a stalled client is dropped.
  server.setTimeout(options.idleTimeoutMs)

  // Node starts a request's header clock at its first byte, so a client that connects and sends
  // nothing would hold its socket until the idle timeout: it gets the header timeout too.
  const awaitingFirstRequest = new WeakMap<Socket, NodeJS.Timeout>()
  server.on('connection', (socket: Socket) => {
    const timer = setTimeout(() => socket.destroy(), options.headersTimeoutMs)
    timer.unref()
    awaitingFirstRequest.set(socket, timer)
    socket.once('close', () => clearTimeout(timer))
  })

  const pointerWaiters = new PointerWaiters(join(realRoot, 'latest.json'), options.longPollCheckMs)
  const handler = new RequestHandler(realRoot, token, log, { waiters: pointerWaiters, maxMs: options.longPollMaxMs, maxHeld: options.longPollMaxHeld, idleTimeoutMs: options.idleTimeoutMs })
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    clearTimeout(awaitingFirstRequest.get(req.socket))
    if (opts.onResponse) {
      const hook = opts.onResponse
      const before = req.socket.bytesWritten // keep-alive: this socket may have served earlier requests
      res.once('close', () => hook(res.statusCode, req.socket.bytesWritten - before))
    }
    handler.handle(req, res).catch((err: unknown) => handler.fail(res, err))
  })

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(asSnapshotError(err, `cannot listen on ${formatHost(options.host)}:${options.port}`))
    }
    server.once('error', onError)
    server.listen(options.port, options.host, () => {
      server.off('error', onError)
      resolve()
    })
  })
  // After listening, a server error must not become an uncaught exception.
  server.on('error', (err) => handler.writeLog(`server error: ${printable(err.message)}`))

  const port = (server.address() as AddressInfo).port
  return {
    url: `http://${formatHost(options.host)}:${port}`,
    port,
    close: onceAsync(() => {
      pointerWaiters.releaseAll() // held long-polls would otherwise keep close() waiting their whole wait
      return closeServer(server, options.closeGraceMs)
    }),
    heldRequests: () => pointerWaiters.size,
  }
}

function onceAsync(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined
  return () => (p ??= fn())
}

function closeServer(server: Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs)
    timer.unref()
    server.close(() => {
      clearTimeout(timer)
      resolve()
    })
    server.closeIdleConnections()
  })
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  405: 'Method Not Allowed',
  500: 'Internal Server Error',
}

interface LongPoll {
  waiters: PointerWaiters
  maxMs: number
  maxHeld: number
  idleTimeoutMs: number
}

/** What one request's pieces share: for the log line, and to stop work for a client that left. */
interface Exchange {
  closed: boolean
  stream: { bytesRead: number } | undefined
  heldMs: number | undefined
  /** performance.now() when a hold began, while it lasts. */
  holdStarted: number | undefined
}

class RequestHandler {
  constructor(
    private readonly realRoot: string,
    private readonly token: Buffer | undefined,
    private readonly log: ((line: string) => void) | undefined,
    private readonly longPoll: LongPoll,
  ) {}

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? ''
    const target = req.url ?? ''
    const ex: Exchange = { closed: false, stream: undefined, heldMs: undefined, holdStarted: undefined }
    res.on('close', () => {
      ex.closed = true
      const done = res.writableFinished
      const hasBody = method !== 'HEAD' && res.statusCode !== 304
      const bytes = done ? (hasBody ? Number(res.getHeader('content-length') ?? 0) : 0) : (ex.stream?.bytesRead ?? 0)
      const heldMs = (ex.heldMs ?? 0) + (ex.holdStarted === undefined ? 0 : performance.now() - ex.holdStarted)
      const held = ex.heldMs === undefined && ex.holdStarted === undefined ? '' : ` held ${(heldMs / 1000).toFixed(2)} s`
      this.writeLog(`${printable(method)} ${printable(target)} ${res.statusCode} ${bytes}${held}${done ? '' : ' aborted'}`)
    })

    if (this.token !== undefined && !authorized(req.headers.authorization, this.token)) {
      return this.sendError(res, 401, { 'WWW-Authenticate': 'Bearer' })
    }
    if (method !== 'GET' && method !== 'HEAD') return this.sendError(res, 405, { Allow: 'GET, HEAD' })

    const parsed = parseRequestPath(target)
    if (parsed.kind === 'bad-request') return this.sendError(res, 400)
    if (parsed.kind === 'not-found') return this.sendError(res, 404)
    const holdMs = longPollWaitMs(method, target, parsed.segments, req.headers['if-none-match'], this.longPoll.maxMs)
    return this.serveFile(req, res, parsed.segments, holdMs, ex)
  }

  /** Serves one file; a matching long-poll (`holdMs` > 0) waits for the pointer to change first. */
  private async serveFile(req: IncomingMessage, res: ServerResponse, segments: string[], holdMs: number, ex: Exchange): Promise<void> {
    const method = req.method ?? ''
    const file = await this.openInsideRoot(segments)
    if (file === undefined) return this.sendError(res, 404)
    const { fh, st } = file
    let handedOff = false
    try {
      const size = Number(st.size)
      const etag = etagFor(st)
      const lastModified = new Date(Number(st.mtimeMs)).toUTCString()
      const name = segments[segments.length - 1] as string
      res.setHeader('ETag', etag)
      res.setHeader('Last-Modified', lastModified)
      res.setHeader('Cache-Control', cacheControlFor(segments))
      res.setHeader('Accept-Ranges', 'bytes')
      res.setHeader('X-Content-Type-Options', 'nosniff')

      if (notModified(req, etag, st)) {
        const lp = this.longPoll
        if (holdMs > 0 && lp.waiters.size < lp.maxHeld && !lp.waiters.released) {
          handedOff = true
          await fh.close()
          res.setHeader(LONG_POLL_HEADER, String(Math.round(holdMs / 1000)))
          // A held request is silent by design: the idle timeout would cut it; our wait bounds it.
          req.socket.setTimeout(0)
          res.statusCode = 304 // what the log says if the client leaves during the hold
          ex.holdStarted = performance.now()
          const why = await lp.waiters.wait(etag, holdMs, res)
          ex.heldMs = (ex.heldMs ?? 0) + performance.now() - ex.holdStarted
          ex.holdStarted = undefined
          if (ex.closed) return
          req.socket.setTimeout(lp.idleTimeoutMs)
          if (why === 'changed') return this.serveFile(req, res, segments, 0, ex)
          if (why === 'released') res.setHeader('Connection', 'close') // the server is closing
        }
        res.writeHead(304) // no Content-Length: a 304 has no body
        res.end()
        return
      }

      // Range is defined for GET only; If-Range must name this exact version (strong compare).
      const ifRange = req.headers['if-range']
      const rangeHeader = method === 'GET' && (ifRange === undefined || ifRange === etag) ? req.headers.range : undefined
      const range = parseByteRange(rangeHeader, size)
      if (range.kind === 'unsatisfiable') {
        res.writeHead(416, { 'Content-Range': `bytes */${size}`, 'Content-Length': 0 })
        res.end()
        return
      }
      const start = range.kind === 'partial' ? range.start : 0
      const end = range.kind === 'partial' ? range.end : size - 1
      const length = end - start + 1
      res.setHeader('Content-Type', contentTypeFor(name))
      res.setHeader('Content-Length', length)
      if (range.kind === 'partial') {
        res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`)
        res.statusCode = 206
      } else {
        res.statusCode = 200
      }
      if (method === 'HEAD' || length === 0) {
        res.end()
        return
      }
      if (ex.closed) return // the client left while we opened the file
      // The stream owns the handle from here: it closes it on end, error or destroy.
      const rs = fh.createReadStream({ start, end, autoClose: true })
      handedOff = true
      ex.stream = rs
      res.once('close', () => rs.destroy()) // client abort or idle timeout: release the fd now
      rs.once('error', (err) => {
        // Headers go out with the first chunk, so an early read error can still be a clean 500.
        this.writeLog(`read error: ${printable(err.message)}`)
        this.sendError(res, 500)
      })
      rs.pipe(res)
    } finally {
      if (!handedOff) await fh.close()
    }
  }

  /** A regular file under the store, reached only through non-hidden names; else undefined. */
  private async openInsideRoot(segments: string[]): Promise<{ fh: FileHandle; st: BigIntStats } | undefined> {
    let real: string
    try {
      real = await realpath(join(this.realRoot, ...segments))
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
    const rel = relative(this.realRoot, real)
    if (rel === '' || isAbsolute(rel) || rel === '..' || rel.startsWith(`..${sep}`)) return undefined
    if (rel.split(sep).some(isHiddenSegment)) return undefined // a symlink into .state/ or to a key
    if (!isServedPath(rel.split(sep))) return undefined // a symlink to a stray file in the store
    let fh: FileHandle
    try {
      // O_NONBLOCK: opening a FIFO someone left in the store must not hang a thread.
      fh = await open(real, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0))
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
    try {
      const st = await fh.stat({ bigint: true })
      if (!st.isFile()) {
        await fh.close()
        return undefined
      }
      return { fh, st }
    } catch (err) {
      await fh.close()
      throw err
    }
  }

  sendError(res: ServerResponse, status: number, headers: Record<string, string> = {}): void {
    if (res.headersSent) {
      res.destroy()
      return
    }
    const body = `${status} ${STATUS_TEXT[status] ?? 'Error'}\n`
    for (const name of res.getHeaderNames()) res.removeHeader(name)
    const all = {
      ...headers,
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(body)),
      'Cache-Control': 'no-store',
    }
    for (const [name, value] of Object.entries(all)) res.setHeader(name, value) // readable by the log
    res.statusCode = status
    res.end(res.req.method === 'HEAD' ? undefined : body)
  }

  /** Last resort for an unexpected error in one request: answer 500, keep the server up. */
  fail(res: ServerResponse, err: unknown): void {
    this.writeLog(`error: ${printable(err instanceof Error ? err.message : String(err))}`)
    try {
      this.sendError(res, 500)
    } catch {
      res.destroy()
    }
  }

  writeLog(line: string): void {
    if (this.log === undefined) return
    try {
      this.log(line)
    } catch {
      // A broken logger must not take requests down with it.
    }
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'ENAMETOOLONG'
}

type WakeReason = 'changed' | 'timeout' | 'closed' | 'released'
interface Waiter {
  etag: string
  wake(why: WakeReason): void
}

/**
 * The held long-polls. One timer checks the pointer for all of them (a stat every `checkMs`, only
 * while one is held): the pointer is replaced by rename, so its ETag (inode, size, mtime) changes
 * with each publication. Each waiter also ends on its own deadline, or when its client leaves.
 */
class PointerWaiters {
  private readonly waiters = new Set<Waiter>()
  private timer: NodeJS.Timeout | undefined
  private checking = false
  released = false

  constructor(
    private readonly file: string,
    private readonly checkMs: number,
  ) {}

  get size(): number {
    return this.waiters.size
  }

  wait(etag: string, ms: number, res: ServerResponse): Promise<WakeReason> {
    return new Promise<WakeReason>((resolve) => {
      const deadline = setTimeout(() => waiter.wake('timeout'), ms)
      const onClose = (): void => waiter.wake('closed')
      const waiter: Waiter = {
        etag,
        wake: (why) => {
          if (!this.waiters.delete(waiter)) return
          clearTimeout(deadline)
          res.off('close', onClose)
          if (this.waiters.size === 0) this.stopTimer()
          resolve(why)
        },
      }
      this.waiters.add(waiter)
      res.once('close', onClose)
      this.timer ??= setInterval(() => void this.check(), this.checkMs)
    })
  }

  /** Answers every held request now, and holds no new one (the server is closing). */
  releaseAll(): void {
    this.released = true
    for (const w of [...this.waiters]) w.wake('released')
  }

  private async check(): Promise<void> {
    if (this.checking) return
    this.checking = true
    try {
      const current = await stat(this.file, { bigint: true }).then(etagFor, () => 'missing')
      for (const w of [...this.waiters]) if (w.etag !== current) w.wake('changed')
    } finally {
      this.checking = false
    }
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}

/** If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2). */
function notModified(req: IncomingMessage, etag: string, st: BigIntStats): boolean {
  const inm = req.headers['if-none-match']
  if (inm !== undefined) return ifNoneMatchHits(inm, etag)
  const ims = req.headers['if-modified-since']
  if (ims === undefined) return false
  const since = Date.parse(ims)
  if (Number.isNaN(since)) return false
  return Math.floor(Number(st.mtimeMs) / 1000) * 1000 <= since
}
