import { startStaticServer } from '../http/static-server.js'
import type { Output } from './output.js'

/** Serves the store until SIGINT or SIGTERM, then closes cleanly. */
export async function serveCommand(opts: { store: string; host: string; port: number; token?: string; quiet?: boolean }, out: Output): Promise<void> {
  const token = opts.token ?? process.env.SNAPSHOT_TOKEN
  const server = await startStaticServer({
    root: opts.store,
    host: opts.host,
    port: opts.port,
    ...(token ? { token } : {}),
    ...(opts.quiet ? {} : { log: (line: string) => out.log(line) }),
  })
  out.result({ url: server.url, port: server.port }, [`serving ${opts.store} at ${server.url}`])
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      void server.close().then(resolve)
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
}
