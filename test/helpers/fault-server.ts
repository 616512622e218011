import { readFileSync, statSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'

/**
 * A store server for fault tests: serves a store directory over HTTP on 127.0.0.1 (GET, single
 * `Range: bytes=N-`), and misbehaves on demand. Each fault applies to the next `times` requests
 * whose path matches `match` (default: every path), then the server behaves again:
 *
 * - `status`: answer that status code (a 500/503 outage), with `Retry-After` if given;
 * - `stallAfter`: send the headers and that many body bytes, then nothing, socket left open;
 * - `resetAfter`: send that many body bytes, then reset the connection (TCP RST);
 * - `drip`: send the body in `chunk`-byte pieces every `everyMs` (a slow link, never a stall).
 *
 * Every request is logged with its Range header and the body bytes actually sent.
 */
export type Fault =
  | { kind: 'status'; code: number; retryAfter?: number }
  | { kind: 'stallAfter'; bytes: number }
  | { kind: 'resetAfter'; bytes: number }
  | { kind: 'drip'; chunk: number; everyMs: number }

export interface FaultRule {
  fault: Fault
  times: number
  match?: RegExp
}

export interface LoggedRequest {
  path: string
  range: string | undefined
  status: number
  fault: Fault['kind'] | null
  bytesSent: number
}

export interface FaultServer {
  readonly url: string
  readonly port: number
  readonly log: LoggedRequest[]
  /** Adds a fault for the next requests (rules are tried in the order added). */
  inject(rule: FaultRule): void
  /** Drops the faults not used up yet and forgets the log. */
  reset(): void
  /** Body bytes sent for paths matching `match`, over all requests. */
  bytesSent(match: RegExp): number
  close(): Promise<void>
}

export async function startFaultServer(root: string): Promise<FaultServer> {
  const rules: FaultRule[] = []
  const log: LoggedRequest[] = []
  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()

  const takeFault = (path: string): Fault | null => {
    const rule = rules.find((r) => r.times > 0 && (r.match?.test(path) ?? true))
    if (!rule) return null
    rule.times--
    return rule.fault
  }

  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t)
      fn()
    }, ms)
    timers.add(t)
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]!)
    const entry: LoggedRequest = { path, range: req.headers.range, status: 0, fault: null, bytesSent: 0 }
    log.push(entry)
    const send = (chunk: Buffer, done?: () => void): void => {
      entry.bytesSent += chunk.length
      res.write(chunk, done)
    }
    const fault = takeFault(path)
    entry.fault = fault?.kind ?? null
    if (fault?.kind === 'status') {
      entry.status = fault.code
      res.writeHead(fault.code, { 'content-type': 'text/plain', ...(fault.retryAfter !== undefined ? { 'retry-after': String(fault.retryAfter) } : {}) })
      res.end(`injected ${fault.code}\n`)
      return
    }
    const rel = path.replace(/^\/+/, '')
    if (rel.split('/').some((s) => s === '..' || s.startsWith('.')) || rel === '') {
      entry.status = 404
      res.writeHead(404).end()
      return
    }
    const file = join(root, rel)
    let body: Buffer
    try {
      if (!statSync(file).isFile()) throw new Error('not a file')
      body = readFileSync(file)
    } catch {
      entry.status = 404
      res.writeHead(404).end()
      return
    }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
    const from = m ? Number(m[1]) : 0
    if (from >= body.length && body.length > 0) {
      entry.status = 416
      res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end()
      return
    }
    const part = body.subarray(from)
    entry.status = m ? 206 : 200
    res.writeHead(entry.status, {
      'content-length': part.length,
      'accept-ranges': 'bytes',
      ...(m ? { 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` } : {}),
    })
    if (fault?.kind === 'stallAfter') {
      send(part.subarray(0, fault.bytes)) // and then silence, until the client gives up
      return
    }
    if (fault?.kind === 'resetAfter') {
      // Let the bytes reach the client before the reset, or the RST could discard them unsent.
      send(part.subarray(0, fault.bytes), () => later(100, () => req.socket.resetAndDestroy()))
      return
    }
    if (fault?.kind === 'drip') {
      let at = 0
      const next = (): void => {
        if (res.destroyed) return
        const chunk = part.subarray(at, at + fault.chunk)
        at += chunk.length
        if (at >= part.length) {
          entry.bytesSent += chunk.length
          res.end(chunk)
        } else {
          send(chunk)
          later(fault.everyMs, next)
        }
      }
      next()
      return
    }
    entry.bytesSent += part.length
    res.end(part)
  })
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    log,
    inject: (rule) => void rules.push({ ...rule }),
    reset: () => {
      rules.length = 0
      log.length = 0
    },
    bytesSent: (match) => log.filter((r) => match.test(r.path)).reduce((n, r) => n + r.bytesSent, 0),
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t)
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
