import { STATIC_SERVER_DEFAULTS } from '../http/static-server-options.js'
import { startStaticServer } from '../http/static-server.js'
import type { MetricsFlags } from '../metrics/metrics-flags.js'
import type { Output } from './output.js'

export interface ServeCommandOptions {
  store: string
  host: string
  port: number
  token?: string
  /** Seconds a client has to send its request head (slow-loris bound). */
  headerTimeout?: number
  /** Seconds a connection may stay silent both ways before it is dropped. */
  idleTimeout?: number
  quiet?: boolean
  metricsListen?: MetricsFlags['metricsListen']
}

/** Serves the store until SIGINT or SIGTERM, then closes cleanly. */
export async function serveCommand(opts: ServeCommandOptions, out: Output): Promise<void> {
  const token = opts.token
  const headersTimeoutMs = opts.headerTimeout !== undefined ? opts.headerTimeout * 1000 : undefined
  const listen = opts.metricsListen
  const serveMetrics = listen ? await loadServeMetrics() : null // prom-client only with --metrics-listen
  const server = await startStaticServer({
    root: opts.store,
    host: opts.host,
    port: opts.port,
    ...(token ? { token } : {}),
    // The whole request may take no less than its head: a long --header-timeout raises both.
    ...(headersTimeoutMs !== undefined ? { headersTimeoutMs, requestTimeoutMs: Math.max(STATIC_SERVER_DEFAULTS.requestTimeoutMs, headersTimeoutMs) } : {}),
    ...(opts.idleTimeout !== undefined ? { idleTimeoutMs: opts.idleTimeout * 1000 } : {}),
    ...(opts.quiet ? {} : { log: (line: string) => out.log(line) }),
    ...(serveMetrics ? { onResponse: serveMetrics.onResponse } : {}),
  })
  const metrics =
    serveMetrics && listen
      ? await serveMetrics.open(listen, out).catch(async (err: unknown) => {
          await server.close()
          throw err
        })
      : null
  out.result({ url: server.url, port: server.port, ...(metrics?.url ? { metricsUrl: `${metrics.url}/metrics` } : {}) }, [`serving ${opts.store} at ${server.url}`])
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      void Promise.all([server.close(), metrics?.close()]).then(() => resolve())
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
}

/** The server's request metrics, with prom-client loaded now. */
async function loadServeMetrics() {
  const [{ Registry }, serve, { openMetricsOutputs }] = await Promise.all([import('prom-client'), import('../metrics/serve-metrics.js'), import('../metrics/metrics-outputs.js')])
  const registry = new Registry()
  const m = serve.createServeMetrics(registry)
  return {
    onResponse: (status: number, bytes: number): void => serve.recordResponse(m, status, bytes),
    open: (metricsListen: NonNullable<MetricsFlags['metricsListen']>, out: Output) => openMetricsOutputs({ metricsListen }, registry, { longRunning: true, command: 'serve', log: (l) => out.log(l) }),
  }
}
