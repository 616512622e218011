/**
 * The static HTTP server behind `snapshot serve`: a read-only view of the store directory.
 *
 * Only GET and HEAD; only paths made of conservative segments; never a dot-path, a `*.key` file or
 * anything a symlink leads to outside the store. `latest.json` (the one mutable file) is never
 * cached; content-named snapshots and objects are cached forever. Single byte ranges, ETag and
 * If-Range let a replica resume an interrupted download. What a request asks and the headers of
 * the answer are pure (static-request.ts); held long-polls are pointer-waiters.ts; requests held
 * while a relay's mirror copies are mirror-hold.ts; the check for private keys before listening is
 * store-key-scan.ts; options and their defaults are static-server-options.ts. This module does
 * the I/O (a little over 350 lines: the request's life, from its head to its last byte, in one
 * place).
 */
import { timingSafeEqual } from 'node:crypto'
import { constants as fsConstants, type BigIntStats } from 'node:fs'
import { open, realpath, stat, type FileHandle } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { isAbsolute, join, relative, sep } from 'node:path'
import { UsageError, asSnapshotError } from '../core/errors.js'
import { resolveOptions, sha256, type StaticServerOptions } from './static-server-options.js'
import { MirrorHold } from './mirror-hold.js'
import { PointerWaiters } from './pointer-waiters.js'
import { bodyPlan, fileHeaders, isHiddenSegment, isServedPath, LONG_POLL_HEADER, longPollWaitMs, notModified, parseRequestPath, rangeToServe, unsatisfiableHeaders } from './static-request.js'
import { assertNoPrivateKeys } from './store-key-scan.js'

export type { StaticServerOptions } from './static-server-options.js'

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
  const mirrorHold = new MirrorHold(realRoot, options.mirrorHoldCheckMs, options.mirrorHoldMaxMs, options.mirrorHoldGraceMs)
  const handler = new RequestHandler(realRoot, token, log, { waiters: pointerWaiters, maxMs: options.longPollMaxMs, maxHeld: options.longPollMaxHeld, idleTimeoutMs: options.idleTimeoutMs }, mirrorHold)
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
    private readonly mirrorHold: MirrorHold,
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
    const file = (await this.openInsideRoot(segments)) ?? (await this.awaitMirrored(req, segments, ex))
    if (file === undefined) return this.sendError(res, 404)
    const { fh, st } = file
    let handedOff = false
    try {
      const size = Number(st.size)
      const headers = fileHeaders(segments, st)
      const etag = headers.ETag!
      const name = segments[segments.length - 1] as string
      for (const [k, v] of Object.entries(headers)) res.setHeader(k, v)

      if (notModified(req.headers, etag, Number(st.mtimeMs))) {
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

      const range = rangeToServe(method, req.headers, etag, size)
      if (range.kind === 'unsatisfiable') {
        res.writeHead(416, unsatisfiableHeaders(size))
        res.end()
        return
      }
      const { status, start, end, length, headers: bodyHeaders } = bodyPlan(range, size, name)
      for (const [k, v] of Object.entries(bodyHeaders)) res.setHeader(k, v)
      res.statusCode = status
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

  /**
   * A record or an object this relay lacks while its mirror copies: held until it lands (it is
   * opened then), else undefined. Never the pointer: that is the long-poll's business.
   */
  private async awaitMirrored(req: IncomingMessage, segments: string[], ex: Exchange): Promise<{ fh: FileHandle; st: BigIntStats } | undefined> {
    if (segments.length !== 2 || !this.mirrorHold.mayBring()) return undefined
    req.socket.setTimeout(0) // silent while held; the hold's own bound ends it
    ex.holdStarted = performance.now()
    const landed = await this.mirrorHold.waitFor(join(this.realRoot, ...segments), () => ex.closed)
    ex.heldMs = (ex.heldMs ?? 0) + performance.now() - ex.holdStarted
    ex.holdStarted = undefined
    req.socket.setTimeout(this.longPoll.idleTimeoutMs)
    return landed && !ex.closed ? this.openInsideRoot(segments) : undefined
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

