/**
 * A TCP proxy that adds a round-trip time, for the WAN benchmark on kernels without sch_netem
 * (what toxiproxy's latency toxic does): each chunk is held rtt/2 in each direction, and a new
 * connection's first bytes wait one more round trip, as the TCP handshake would make them. The
 * rate limit is not ours: `tbf` on the link shapes the bytes this proxy writes and receives.
 *
 * It also counts, per listener, connections, bytes each way, and request heads (a `\r\n\r\n`
 * from the client: exact for the bodiless GETs and HEADs a replica sends; meaningless for rsync).
 *
 *   node dist/scripts/wan-latency-proxy.js --rtt-ms 160 --map 10.77.1.1:8080=127.0.0.1:8080 [--map ...]
 *
 * Prints `{"listening":[...]}` once every listener is up. On stdin, a line `stats` prints one JSON
 * line of counters per listener since start. SIGTERM closes everything.
 */
import { createServer, connect, type Server, type Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { isRunAsMain } from './run-as-main.js'

export interface ProxyCounters {
  listen: string
  connections: number
  requests: number
  bytesUp: number
  bytesDown: number
}

interface Endpoint {
  host: string
  port: number
}

/** Buffered in the proxy per direction before it stops reading: about a 100 Mbit/s link's round trip. */
const HIGH_WATER = 4 << 20
const LOW_WATER = 1 << 20

function parseEndpoint(text: string): Endpoint {
  const i = text.lastIndexOf(':')
  const port = Number(text.slice(i + 1))
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`not HOST:PORT: ${text}`)
  return { host: text.slice(0, i), port }
}

/**
 * One direction of one connection: chunks leave `delayMs` after they arrived (and not before
 * `notBefore`), in order, with backpressure on the source when too much is held.
 */
function pipeDelayed(src: Socket, dst: Socket, delayMs: number, notBefore: number, onChunk: (chunk: Buffer) => void): void {
  const queue: { at: number; chunk: Buffer }[] = []
  let held = 0
  let timer: NodeJS.Timeout | undefined
  let ended = false
  const flush = (): void => {
    timer = undefined
    const now = performance.now()
    while (queue.length > 0 && queue[0]!.at <= now) {
      const { chunk } = queue.shift()!
      held -= chunk.length
      if (!dst.destroyed) dst.write(chunk)
    }
    if (queue.length > 0) timer = setTimeout(flush, Math.max(0, queue[0]!.at - now))
    else if (ended && !dst.destroyed) dst.end()
    if (src.isPaused() && held + dst.writableLength < LOW_WATER) src.resume()
  }
  src.on('data', (chunk: Buffer) => {
    onChunk(chunk)
    queue.push({ at: Math.max(performance.now() + delayMs, notBefore + delayMs), chunk })
    held += chunk.length
    if (held + dst.writableLength > HIGH_WATER) src.pause()
    timer ??= setTimeout(flush, Math.max(0, queue[0]!.at - performance.now()))
  })
  dst.on('drain', () => {
    if (src.isPaused() && held + dst.writableLength < LOW_WATER) src.resume()
  })
  src.on('end', () => {
    ended = true
    timer ??= setTimeout(flush, 0)
  })
}

/** Starts one listener; resolves once it listens. */
export function startDelayProxy(listen: Endpoint, target: Endpoint, rttMs: number): Promise<{ server: Server; counters: ProxyCounters }> {
  const counters: ProxyCounters = { listen: `${listen.host}:${listen.port}`, connections: 0, requests: 0, bytesUp: 0, bytesDown: 0 }
  const half = rttMs / 2
  const server = createServer({ noDelay: true }, (client) => {
    counters.connections++
    // The handshake's round trip: the client's first bytes reach the server 1.5 RTT after it connected.
    const acceptedAt = performance.now()
    const upstream = connect({ host: target.host, port: target.port, noDelay: true })
    let tail = '' // the end of the previous chunk, for heads split across chunks
    const kill = (): void => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', kill)
    upstream.on('error', kill)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    pipeDelayed(client, upstream, half, acceptedAt + rttMs, (chunk) => {
      counters.bytesUp += chunk.length
      const text = tail + chunk.toString('latin1')
      counters.requests += text.split('\r\n\r\n').length - 1
      tail = text.slice(-3)
    })
    pipeDelayed(upstream, client, half, 0, (chunk) => {
      counters.bytesDown += chunk.length
    })
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject)
      resolve({ server, counters })
    })
  })
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'rtt-ms': { type: 'string' }, map: { type: 'string', multiple: true } } })
  const rtt = Number(values['rtt-ms'] ?? '0')
  if (!Number.isFinite(rtt) || rtt < 0) throw new Error('--rtt-ms takes a number of milliseconds')
  const maps = (values.map ?? []).map((m) => {
    const [l, t] = m.split('=')
    if (!l || !t) throw new Error(`--map LISTEN=TARGET, not ${m}`)
    return { listen: parseEndpoint(l), target: parseEndpoint(t) }
  })
  if (maps.length === 0) throw new Error('give at least one --map LISTEN_HOST:PORT=TARGET_HOST:PORT')
  const proxies = await Promise.all(maps.map((m) => startDelayProxy(m.listen, m.target, rtt)))
  process.stdout.write(JSON.stringify({ listening: proxies.map((p) => p.counters.listen) }) + '\n')
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'stats') process.stdout.write(JSON.stringify(proxies.map((p) => p.counters)) + '\n')
  })
  const stop = (): void => {
    for (const p of proxies) {
      p.server.close()
      p.server.unref()
    }
    process.exit(0) // open connections go with the process
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (isRunAsMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`wan-latency-proxy: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
