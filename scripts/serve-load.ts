/**
 * Load on `snapshot serve`: starts it as a real process on 127.0.0.1 (or uses --url), then keeps
 * --concurrency downloads in flight at once, each on its own connection, until --seconds have
 * passed or --requests were made, whichever comes first. Every body is checked: an object must
 * hash to its name, any other file must equal the file in the store. Prints requests/s and MB/s.
 *
 *   node dist/scripts/serve-load.js --store DIR [--concurrency 200] [--seconds 5] [--requests 2000] [--url URL] [--token T] [--json]
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { Agent, request } from 'node:http'
import type { Socket } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { isRunAsMain } from './run-as-main.js'

export interface LoadOptions {
  store: string
  /** A server already running; without it, `snapshot serve --store` is started for the run. */
  url?: string
  concurrency: number
  seconds: number
  requests: number
  token?: string
}

export interface LoadResult {
  url: string
  concurrency: number
  /** Most requests in flight at one moment. */
  peakInFlight: number
  /** Distinct TCP connections the run opened. */
  connections: number
  requests: number
  errors: number
  errorSamples: string[]
  bytes: number
  seconds: number
  requestsPerSecond: number
  megabytesPerSecond: number
  files: number
}

interface Target {
  path: string
  size: number
  sha256: string
}

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const bin = join(repo, 'bin/snapshot')

/** What a replica fetches: the pointer, the records and the objects, with the bytes they must have. */
function listTargets(store: string): Target[] {
  const targets: Target[] = []
  const add = (rel: string): void => {
    const data = readFileSync(join(store, rel))
    targets.push({ path: `/${rel}`, size: data.length, sha256: createHash('sha256').update(data).digest('hex') })
  }
  add('latest.json')
  for (const dir of ['snapshots', 'objects']) {
    for (const name of readdirSync(join(store, dir)).sort()) {
      if (!name.startsWith('.') && statSync(join(store, dir, name)).isFile()) add(`${dir}/${name}`)
    }
  }
  return targets
}

async function startServer(store: string, token: string | undefined): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [bin, 'serve', '--store', store, '--host', '127.0.0.1', '--port', '0', '--json', '--quiet'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...(token ? { SNAPSHOT_TOKEN: token } : {}) },
  })
  const url = await new Promise<string>((ok, fail) => {
    createInterface({ input: child.stdout! }).once('line', (l) => ok((JSON.parse(l) as { url: string }).url))
    child.once('exit', (code) => fail(new Error(`snapshot serve exited ${code}`)))
  })
  return { url, child }
}

export async function runServeLoad(opts: LoadOptions): Promise<LoadResult> {
  const targets = listTargets(opts.store)
  const started = opts.url ? null : await startServer(opts.store, opts.token)
  const base = new URL(opts.url ?? started!.url)
  const agent = new Agent({ keepAlive: true, maxSockets: opts.concurrency, maxFreeSockets: opts.concurrency })
  const sockets = new WeakSet<Socket>()
  let connections = 0
  let inFlight = 0
  let peakInFlight = 0
  let issued = 0
  let done = 0
  let errors = 0
  const errorSamples: string[] = []
  let bytes = 0
  const begin = process.hrtime.bigint()
  const deadline = Date.now() + opts.seconds * 1000

  const fail = (what: string): void => {
    errors++
    if (errorSamples.length < 10) errorSamples.push(what)
  }

  const fetchOne = (t: Target): Promise<void> =>
    new Promise((resolveOne) => {
      inFlight++
      peakInFlight = Math.max(peakInFlight, inFlight)
      const finish = (): void => {
        inFlight--
        done++
        resolveOne()
      }
      const req = request(
        { host: base.hostname, port: base.port, path: t.path, agent, headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {} },
        (res) => {
          const hash = createHash('sha256')
          let length = 0
          res.on('data', (chunk: Buffer) => {
            hash.update(chunk)
            length += chunk.length
          })
          res.on('end', () => {
            bytes += length
            if (res.statusCode !== 200) fail(`${t.path}: HTTP ${res.statusCode}`)
            else if (length !== t.size) fail(`${t.path}: ${length} bytes, expected ${t.size}`)
            else if (hash.digest('hex') !== t.sha256) fail(`${t.path}: wrong bytes`)
            finish()
          })
          res.on('error', (err) => {
            fail(`${t.path}: ${err.message}`)
            finish()
          })
        },
      )
      req.on('socket', (s: Socket) => {
        if (!sockets.has(s)) {
          sockets.add(s)
          connections++
        }
      })
      req.on('error', (err) => {
        fail(`${t.path}: ${err.message}`)
        finish()
      })
      req.end()
    })

  // Each worker keeps one download in flight; they all start at once.
  const worker = async (w: number): Promise<void> => {
    for (let i = w; issued < opts.requests && Date.now() < deadline; i += opts.concurrency) {
      issued++
      await fetchOne(targets[i % targets.length]!)
    }
  }
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, (_, w) => worker(w)))
  } finally {
    agent.destroy()
    if (started) {
      const exited = new Promise((r) => started.child.once('exit', r))
      started.child.kill('SIGTERM')
      await exited
    }
  }
  const seconds = Number(process.hrtime.bigint() - begin) / 1e9
  return {
    url: base.href,
    concurrency: opts.concurrency,
    peakInFlight,
    connections,
    requests: done,
    errors,
    errorSamples,
    bytes,
    seconds,
    requestsPerSecond: done / seconds,
    megabytesPerSecond: bytes / 1e6 / seconds,
    files: targets.length,
  }
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      store: { type: 'string' },
      url: { type: 'string' },
      concurrency: { type: 'string', default: '200' },
      seconds: { type: 'string', default: '5' },
      requests: { type: 'string', default: '2000' },
      token: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  })
  if (!values.store) throw new Error('--store DIR is required (the store to serve, and to check the bytes against)')
  const r = await runServeLoad({
    store: values.store,
    ...(values.url ? { url: values.url } : {}),
    concurrency: Number(values.concurrency),
    seconds: Number(values.seconds),
    requests: Number(values.requests),
    ...((values.token ?? process.env.SNAPSHOT_TOKEN) ? { token: values.token ?? process.env.SNAPSHOT_TOKEN } : {}),
  })
  if (values.json) process.stdout.write(JSON.stringify(r) + '\n')
  else {
    process.stdout.write(
      `snapshot serve at ${r.url}: ${r.concurrency} concurrent downloads (peak in flight ${r.peakInFlight}, ${r.connections} connections), ` +
        `${r.requests} requests of ${r.files} files in ${r.seconds.toFixed(2)} s: ${r.requestsPerSecond.toFixed(0)} requests/s, ` +
        `${r.megabytesPerSecond.toFixed(1)} MB/s, ${r.errors} errors\n`,
    )
    for (const e of r.errorSamples) process.stdout.write(`  error: ${e}\n`)
  }
  if (r.errors > 0) process.exitCode = 1
}

if (isRunAsMain(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`serve-load: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 2
  })
}
