import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'
import { asSnapshotError } from '../core/errors.js'
import type { ListenAddress } from './listen-address.js'

/**
 * The `--metrics-listen` endpoint of a long-running process: `GET /metrics` (Prometheus' text
 * format) and, on a replica, `GET /status` (JSON). Read-only, and nothing else is served.
 */
export interface MetricsServerOptions {
  readonly listen: ListenAddress
  readonly registry: Registry
  /** What `/status` serves; without it `/status` is a 404. */
  readonly status?: () => Promise<unknown>
  readonly log?: (line: string) => void
}

export interface RunningMetricsServer {
  readonly url: string
  readonly port: number
  close(): Promise<void>
}

export async function startMetricsServer(o: MetricsServerOptions): Promise<RunningMetricsServer> {
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    handle(o, req, res).catch((err: unknown) => {
      o.log?.(`metrics endpoint: ${err instanceof Error ? err.message : String(err)}`)
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n')
      else res.destroy()
    })
  })
  server.keepAliveTimeout = 5_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(asSnapshotError(err, `--metrics-listen: cannot listen on ${o.listen.host}:${o.listen.port}`)))
    server.listen(o.listen.port, o.listen.host, () => resolve())
  })
  server.on('error', (err) => o.log?.(`metrics endpoint: ${err.message}`))
  const port = (server.address() as AddressInfo).port
  const host = o.listen.host.includes(':') ? `[${o.listen.host}]` : o.listen.host
  return {
    url: `http://${host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

async function handle(o: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain; charset=utf-8', 'GET or HEAD only\n', { Allow: 'GET, HEAD' })
  const path = (req.url ?? '').split('?')[0]
  if (path === '/metrics') return send(res, 200, o.registry.contentType, await o.registry.metrics())
  if (path === '/status' && o.status) {
    const s = await o.status()
    if (s === null) return send(res, 503, 'application/json', JSON.stringify({ error: 'not a replica yet: no pull has run' }) + '\n')
    return send(res, 200, 'application/json', JSON.stringify(s) + '\n')
  }
  send(res, 404, 'text/plain; charset=utf-8', 'not found: /metrics' + (o.status ? ' and /status' : '') + ' only\n')
}

function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...headers })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}
