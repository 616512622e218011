/**
 * Measures `pull --limit-rate` through a link of known rate (BENCHMARKS.md, "--limit-rate").
 *
 * Makes a network namespace joined to this one by a veth pair, both ends shaped by the kernel's
 * `tbf` to 100 Mbit/s; builds a store whose full archive is ~20 MB of incompressible bytes; serves
 * it with `snapshot serve` on the host's end; pulls it from inside the namespace, once without a
 * cap (the link's own speed) and once with `--limit-rate`; and samples the host end's transmit
 * counter every second while each pull runs. Prints the pull's wall time, the bytes on the wire
 * and the most bytes the link carried in any one sampled second. The namespace, the server and
 * the files are removed on exit, also on an error or a signal. `--rmem-max N` caps the replica
 * namespace's TCP receive buffers (net.ipv4.tcp_rmem), which otherwise let the kernel take in
 * megabytes ahead of a reader that paces itself.
 *
 *   npx tsc -p tsconfig.json && node dist/scripts/limit-rate-check.js [--mb 20] [--rate 2M] [--link-mbit 100]
 *
 * Needs root, `ip` and `tc` (iproute2: scripts/test-deps.sh installs it).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { fileURLToPath } from 'node:url'
import { parseRate } from '../src/store/rate-limit.js'
import { isRunAsMain } from './run-as-main.js'

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/snapshot')

export interface PullMeasure {
  label: string
  /** the pull command, start to exit (download, then writing, verifying and flushing the tree) */
  seconds: number
  /** first to last 100 ms with traffic on the link: the download itself */
  transferSeconds: number
  wireBytes: number
  /** bytes in each whole second since the pull started, from the counter read once a second */
  perSecond: number[]
  /** the most bytes in any window of at most one second, from the counter read every 100 ms */
  maxSecondBytes: number
}

/** Cumulative bytes the link carried, read every 100 ms: [ms since start, bytes]. */
type Counter = Array<[number, number]>

/** Pure: the figures of a run from its counter readings. */
export function summarize(counter: Counter): Pick<PullMeasure, 'transferSeconds' | 'wireBytes' | 'perSecond' | 'maxSecondBytes'> {
  const perSecond: number[] = []
  for (let s = 1, i = 0, prev = 0; ; s++) {
    while (i < counter.length && counter[i]![0] < s * 1000) i++
    if (i >= counter.length) break
    perSecond.push(counter[i]![1] - prev)
    prev = counter[i]![1]
  }
  let maxSecondBytes = 0
  for (let i = 0, j = 0; i < counter.length; i++) {
    while (j + 1 < counter.length && counter[j + 1]![0] - counter[i]![0] <= 1000) j++
    maxSecondBytes = Math.max(maxSecondBytes, counter[j]![1] - counter[i]![1])
  }
  const busy = counter.map(([at, bytes], i) => [at, i === 0 ? bytes : bytes - counter[i - 1]![1]] as const).filter(([, b]) => b > 10_000)
  const transferSeconds = busy.length === 0 ? 0 : (busy[busy.length - 1]![0] - busy[0]![0] + 100) / 1000
  return { transferSeconds, wireBytes: counter.at(-1)?.[1] ?? 0, perSecond, maxSecondBytes }
}

function sh(cmd: string, args: string[], allowFail = false): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.error) throw new Error(`${cmd}: ${r.error.message} (run scripts/test-deps.sh)`)
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`)
  return r.stdout
}

/** A namespace and a veth pair, shaped both ways; removed by `remove()` (deleting the namespace takes the pair with it). */
class ShapedLink {
  readonly ns = `lrc${process.pid}`
  readonly hostIf = `lrh${process.pid}`.slice(0, 15)
  readonly nsIf = `lrn${process.pid}`.slice(0, 15)
  readonly hostAddr: string
  readonly nsAddr: string
  private made = false

  constructor(
    readonly mbit: number,
    readonly rmemMax: number | undefined,
  ) {
    const net = 200 + (process.pid % 50) // a private /30 unlikely to clash with another run's
    this.hostAddr = `10.${net}.77.1`
    this.nsAddr = `10.${net}.77.2`
  }

  create(): void {
    this.made = true
    sh('ip', ['netns', 'add', this.ns])
    sh('ip', ['link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf])
    sh('ip', ['link', 'set', this.nsIf, 'netns', this.ns])
    sh('ip', ['addr', 'add', `${this.hostAddr}/30`, 'dev', this.hostIf])
    sh('ip', ['link', 'set', this.hostIf, 'up'])
    sh('ip', ['-n', this.ns, 'addr', 'add', `${this.nsAddr}/30`, 'dev', this.nsIf])
    sh('ip', ['-n', this.ns, 'link', 'set', this.nsIf, 'up'])
    sh('ip', ['-n', this.ns, 'link', 'set', 'lo', 'up'])
    if (this.rmemMax !== undefined) {
      // The replica's kernel may grow a socket's receive buffer up to this (per namespace).
      sh('ip', ['netns', 'exec', this.ns, 'sysctl', '-q', '-w', `net.ipv4.tcp_rmem=4096 131072 ${this.rmemMax}`])
    }
    // tbf: the rate, a bucket of 64 KiB (above rate/HZ), and at most 50 ms of queue.
    const tbf = ['root', 'tbf', 'rate', `${this.mbit}mbit`, 'burst', '64kb', 'latency', '50ms']
    sh('tc', ['qdisc', 'add', 'dev', this.hostIf, ...tbf])
    sh('ip', ['netns', 'exec', this.ns, 'tc', 'qdisc', 'add', 'dev', this.nsIf, ...tbf])
  }

  /** Bytes the host end has sent towards the namespace. */
  txBytes(): number {
    return Number(readFileSync(`/sys/class/net/${this.hostIf}/statistics/tx_bytes`, 'utf8'))
  }

  remove(): void {
    if (!this.made) return
    this.made = false
    sh('ip', ['link', 'del', this.hostIf], true)
    sh('ip', ['netns', 'del', this.ns], true)
  }
}

/** Runs `snapshot pull` inside the namespace, reading the link's counter every 100 ms until it exits. */
async function measuredPull(link: ShapedLink, label: string, args: string[]): Promise<PullMeasure> {
  const counter: Counter = []
  const start = performance.now()
  const startBytes = link.txBytes()
  const read = (): void => void counter.push([Math.round(performance.now() - start), link.txBytes() - startBytes])
  read()
  const timer = setInterval(read, 100)
  const child = spawn('ip', ['netns', 'exec', link.ns, process.execPath, BIN, 'pull', ...args, '--json', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const kill = setTimeout(() => child.kill('SIGKILL'), 300_000) // bounded: 20 MB at 16k/s would not fit, nor should it
  const code = await new Promise<number>((done) => child.on('close', (c) => done(c ?? -1)))
  clearTimeout(kill)
  clearInterval(timer)
  read()
  const seconds = (performance.now() - start) / 1000
  if (code !== 0) throw new Error(`${label}: pull exited ${code}: ${stderr.trim()}`)
  const action = (JSON.parse(stdout) as { action: string }).action
  if (action !== 'swapped') throw new Error(`${label}: pull said ${action}, not swapped`)
  return { label, seconds, ...summarize(counter) }
}

function startServe(store: string, host: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--store', store, '--host', host, '--port', '0', '--json', '--quiet'], { stdio: ['ignore', 'pipe', 'inherit'] })
  return new Promise((resolveServe, reject) => {
    const timer = setTimeout(() => reject(new Error('serve did not start')), 20_000)
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer)
      resolveServe({ url: (JSON.parse(line) as { url: string }).url, child })
    })
    child.once('exit', (c) => reject(new Error(`serve exited ${c}`)))
  })
}

export async function limitRateCheck(opts: { mb: number; rate: string; linkMbit: number; rmemMax?: number; log: (line: string) => void }): Promise<PullMeasure[]> {
  const rate = parseRate(opts.rate)
  if (process.getuid?.() !== 0) throw new Error('limit-rate-check makes a network namespace: run it as root')
  const dir = mkdtempSync(join(tmpdir(), 'limit-rate-check-'))
  const link = new ShapedLink(opts.linkMbit, opts.rmemMax)
  let serve: ChildProcess | undefined
  const cleanup = (): void => {
    serve?.kill('SIGTERM')
    link.remove()
    rmSync(dir, { recursive: true, force: true })
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    cleanup()
    process.kill(process.pid, signal)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    // Incompressible files: the full archive is as large as the tree.
    const source = join(dir, 'source')
    mkdirSync(source)
    const fileBytes = 100 * 1024
    for (let i = 0; i * fileBytes < opts.mb * 1e6; i++) writeFileSync(join(source, `f${i}.bin`), randomBytes(fileBytes))
    const store = join(dir, 'store')
    const keys = join(dir, 'keys')
    sh(process.execPath, [BIN, 'keygen', '--out', keys, '--quiet'])
    const built = JSON.parse(sh(process.execPath, [BIN, 'build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--json', '--quiet'])) as { fullBytes: number }
    const rmem = opts.rmemMax === undefined ? "the kernel's default receive buffers" : `net.ipv4.tcp_rmem max ${opts.rmemMax} in the replica's namespace`
    opts.log(`limit-rate-check: a full of ${(built.fullBytes / 1e6).toFixed(1)} MB through a ${opts.linkMbit} Mbit/s tbf link, ${rmem}; --limit-rate ${opts.rate} = ${rate} bytes/s`)

    link.create()
    const server = await startServe(store, link.hostAddr)
    serve = server.child
    const results: PullMeasure[] = []
    for (const [label, extra] of [['no cap', []], [`--limit-rate ${opts.rate}`, ['--limit-rate', opts.rate]]] as const) {
      const replica = join(dir, `replica-${results.length}`)
      mkdirSync(replica)
      const m = await measuredPull(link, label, ['--from', server.url, '--target', join(replica, 'playlists'), '--pubkey', join(keys, 'snapshot.pub'), '--swap', ...extra])
      results.push(m)
      opts.log(
        `${label}: pull ${m.seconds.toFixed(2)} s, download ${m.transferSeconds.toFixed(1)} s, ${(m.wireBytes / 1e6).toFixed(2)} MB on the wire, at most ${(m.maxSecondBytes / 1e6).toFixed(3)} MB in any second; each second (MB): ${m.perSecond.map((b) => (b / 1e6).toFixed(2)).join(' ')}`,
      )
    }
    return results
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    cleanup()
  }
}

if (isRunAsMain(import.meta.url)) {
  const { values } = parseArgs({
    options: { mb: { type: 'string', default: '20' }, rate: { type: 'string', default: '2M' }, 'link-mbit': { type: 'string', default: '100' }, 'rmem-max': { type: 'string' } },
  })
  const mb = Number(values.mb)
  const linkMbit = Number(values['link-mbit'])
  const rmemMax = values['rmem-max'] === undefined ? undefined : Number(values['rmem-max'])
  if (!(mb > 0 && mb <= 1000) || !(linkMbit > 0 && linkMbit <= 10_000) || (rmemMax !== undefined && !(Number.isInteger(rmemMax) && rmemMax >= 131072))) {
    console.error('limit-rate-check: --mb takes 1-1000, --link-mbit 1-10000, --rmem-max a byte count >= 131072')
    process.exit(2)
  }
  limitRateCheck({ mb, rate: values.rate, linkMbit, ...(rmemMax !== undefined ? { rmemMax } : {}), log: (l) => console.log(l) }).catch((err: unknown) => {
    console.error(`limit-rate-check: ${err instanceof Error ? err.message : String(err)}`)
    process.exitCode = 1
  })
}
