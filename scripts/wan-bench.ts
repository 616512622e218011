/**
 * `npm run bench:wan -- --files N --replicas R [--rtt-ms 160] [--rate-mbit 100] [--hours 2]
 * [--trees 3] [--work DIR] [--replica-homes DIR] [--keep] [--no-rsync] [--json]`, as root, on Linux: replicas across
 * continents on one machine. With `--relays`, continents of replicas each with a relay, with
 * relays and without in one run (wan-relays.ts).
 *
 * Each replica lives in its own network namespace with its own tree, joined to the master's
 * namespace by a veth link of `--rtt-ms` round trip and `--rate-mbit` each way (netem where the
 * kernel has it; otherwise tbf for the rate and wan-latency-proxy.ts per link for the delay; see
 * wan-netns.ts). The master runs `snapshot serve` and an rsync daemon; every replica runs
 * `snapshot pull --watch` from before the first build, as deployed.
 *
 * Phases: the first full (the watches pull it as they start; rsync copies the tree to every
 * replica at once), then `--hours` hours of change (scripts/corpus.ts: 10% modified, 0.5%
 * deleted, 0.5% added). Each hour: from the start of `snapshot build` to every replica swapped
 * (each replica's own swap time too), then `rsync -aW --delete` from the daemon to every replica
 * at once, over the same links. Bytes on the wire are the links' interface counters; requests
 * are the request heads the links carried (the watch's checks included). At the end every
 * replica, ours and rsync's, is compared with the master, file contents included.
 *
 * --replica-homes DIR: replica i keeps its trees and rsync's copy in DIR/replica-<ii> (two digits),
 * made beforehand: bench-on-loopfs.sh --fs-per-replica mounts a filesystem of its own there, as
 * each replica has on its own machine, so that one replica's flush before its swap does not wait
 * on the nine others' writes.
 *
 * Namespaces and processes are removed on exit, on a signal and on failure.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { cpus, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ExitCode, UsageError } from '../src/core/errors.js'
import { ensureTool, flushDirtyPages, formatBytes, logLine, treeDifference, wholeNumberFlag } from './bench-lib.js'
import { mutateCorpus } from './corpus.js'
import { isRunAsMain } from './run-as-main.js'
import { bin, prepareMaster, proxyScript, runToEnd, startProcess, stopAll, type LineProcess } from './wan-processes.js'
import { createTopology, destroyTopology, linkBytes, nsArgv, type Replica, type Topology } from './wan-netns.js'
import { formatRelayTable, runRelayBench, type RelayBenchOptions } from './wan-relays.js'

const HTTP_PORT = 8080
const RSYNC_PORT = 8873
const UPSTREAM_RSYNC_PORT = 873

export interface WanOptions {
  files: number
  replicas: number
  rttMs: number
  rateMbit: number
  hours: number
  trees: number
  work: string | undefined
  /** Replica i's directory is <replicaHomes>/replica-<ii>, made beforehand; absent: under the work directory. */
  replicaHomes?: string
  keep: boolean
  rsync: boolean
  /** Bound on each phase's wait for the replicas, ms. */
  phaseTimeoutMs: number
}

export interface ReplicaFigures {
  replica: number
  seconds: number
  /** From the end of the build (the publication) to the watch starting its pull; null for rsync. */
  pullStartSeconds: number | null
  bytesDown: number
  bytesUp: number
  requests: number
}

export interface PhaseFigures {
  phase: string
  snapshotId: number | null
  buildSeconds: number | null
  /** From the start of the build (the first full: of the watches) to the last replica swapped. */
  allSeconds: number
  replicas: ReplicaFigures[]
  rsync: { allSeconds: number; replicas: ReplicaFigures[] } | null
}

export interface WanResult {
  prefix: string
  netem: boolean
  link: { rttMs: number; rateMbit: number }
  files: number
  replicas: number
  trees: number
  machine: { cpus: number; memGiB: number; node: string }
  phases: PhaseFigures[]
  /** Every replica equal to the master at the end (contents compared), ours and rsync's. */
  verified: { replica: number; ours: string | null; rsync: string | null }[]
  work: string
}

// ---------------------------------------------------------------------------------------------

interface Link {
  replica: Replica
  proxy: LineProcess
  watch: LineProcess
  watchLog: string[]
  live: string
  rsyncDir: string
}

async function proxyRequests(link: Link): Promise<number> {
  const from = link.proxy.lines.length
  link.proxy.child.stdin!.write('stats\n')
  const line = await link.proxy.waitFor((l) => l.startsWith('['), 'proxy stats', 10_000, from)
  const stats = JSON.parse(line) as { listen: string; requests: number }[]
  return stats.find((s) => s.listen.endsWith(`:${HTTP_PORT}`))?.requests ?? 0
}

interface Snapshot {
  bytes: { down: number; up: number }[]
  requests: number[]
}

async function measureLinks(topo: Topology, links: Link[]): Promise<Snapshot> {
  return {
    bytes: links.map((l) => linkBytes(topo, l.replica)),
    requests: await Promise.all(links.map(proxyRequests)),
  }
}

function figures(links: Link[], before: Snapshot, after: Snapshot, seconds: number[], requests: boolean, publishedAtMs: number | null = null): ReplicaFigures[] {
  return links.map((l, i) => ({
    replica: l.replica.index,
    seconds: seconds[i]!,
    pullStartSeconds: publishedAtMs === null ? null : ((l.watch.pullStarts.find((t) => t >= publishedAtMs) ?? NaN) - publishedAtMs) / 1000,
    bytesDown: after.bytes[i]!.down - before.bytes[i]!.down,
    bytesUp: after.bytes[i]!.up - before.bytes[i]!.up,
    requests: requests ? after.requests[i]! - before.requests[i]! : 0,
  }))
}

/** Waits until every watch has printed the result of a pull that swapped `id`. */
async function swapsOf(links: Link[], id: number, from: number[], timeoutMs: number): Promise<number[]> {
  const lines = await Promise.all(
    links.map((l, i) =>
      l.watch.waitFor(
        (line) => {
          if (!line.startsWith('{')) return false
          const r = JSON.parse(line) as { action?: string; id?: number }
          return r.action === 'swapped' && r.id === id
        },
        `replica ${l.replica.index} to swap snapshot ${id}`,
        timeoutMs,
        from[i],
      ),
    ),
  )
  return lines.map((line) => (JSON.parse(line) as { swappedAtMs: number }).swappedAtMs)
}

async function rsyncAll(topo: Topology, links: Link[]): Promise<{ allSeconds: number; seconds: number[] }> {
  await flushDirtyPages()
  const t0 = Date.now()
  const ends = await Promise.all(
    links.map((l) =>
      runToEnd(nsArgv(l.replica.ns, ['rsync', '-aW', '--delete', `rsync://${l.replica.masterAddr}:${RSYNC_PORT}/tree/`, `${l.rsyncDir}/`]), `rsync to replica ${l.replica.index}`),
    ),
  )
  const seconds = ends.map((e) => (e.endedAtMs - t0) / 1000)
  return { allSeconds: Math.max(...seconds), seconds }
}

export async function runWanBench(o: WanOptions, log: (line: string) => void = logLine): Promise<WanResult> {
  if (process.getuid?.() !== 0) throw new UsageError('the WAN benchmark makes network namespaces: run it as root')
  await ensureTool('ip', 'iproute2', log)
  await ensureTool('tc', 'iproute2', log)
  if (o.rsync) await ensureTool('rsync', 'rsync', log)
  const { work, master, tree, store, keys, build } = await prepareMaster(o.work, o.files, 'wan', log)

  const topo = createTopology(o.replicas, { rttMs: o.rttMs, rateMbit: o.rateMbit })
  const cleanup = (): void => {
    stopAll()
    destroyTopology(topo.prefix)
  }
  process.once('exit', cleanup)
  log(`namespaces ${topo.prefix}-*: ${o.replicas} replicas, ${o.rttMs} ms round trip, ${o.rateMbit} Mbit/s each way (${topo.netem ? 'netem' : 'tbf + latency proxy'})`)
  try {
    // The first full: built before the watches start, pulled by each as it starts.
    const first = await build()
    log(`built snapshot ${first.id} (full) in ${first.seconds.toFixed(2)} s`)
    const serveLog: string[] = []
    const serve = startProcess(nsArgv(topo.masterNs, [process.execPath, bin, 'serve', '--store', store, '--host', '127.0.0.1', '--port', String(HTTP_PORT), '--json', '--quiet']), 'snapshot serve', serveLog)
    await serve.waitFor((l) => l.startsWith('{'), 'serve to listen', 30_000)
    if (o.rsync) {
      const conf = join(master, 'rsyncd.conf')
      await writeFile(conf, `use chroot = no\nreverse lookup = no\nlog file = ${join(master, 'rsyncd.log')}\npid file = ${join(master, 'rsyncd.pid')}\n[tree]\n  path = ${tree}\n  read only = yes\n  uid = root\n  gid = root\n`)
      const daemonLog: string[] = []
      const daemon = startProcess(nsArgv(topo.masterNs, ['rsync', '--daemon', '--no-detach', `--config=${conf}`, '--address=127.0.0.1', `--port=${UPSTREAM_RSYNC_PORT}`]), 'rsync daemon', daemonLog)
      // Listening once it lists its module (bounded: 50 tries).
      for (let i = 0; ; i++) {
        const listed = await runToEnd(nsArgv(topo.masterNs, ['rsync', `rsync://127.0.0.1:${UPSTREAM_RSYNC_PORT}/`]), 'rsync module list').then((r) => r.stdout.includes('tree'), () => false)
        if (listed) break
        if (i >= 50 || daemon.child.exitCode !== null) throw new Error(`the rsync daemon did not start: ${daemonLog.join(' | ')}`)
        await new Promise((r) => setTimeout(r, 100))
      }
    }
    const links: Link[] = []
    for (const r of topo.replicas) {
      const maps = [`--map`, `${r.masterAddr}:${HTTP_PORT}=127.0.0.1:${HTTP_PORT}`, ...(o.rsync ? ['--map', `${r.masterAddr}:${RSYNC_PORT}=127.0.0.1:${UPSTREAM_RSYNC_PORT}`] : [])]
      const proxy = startProcess(nsArgv(topo.masterNs, [process.execPath, proxyScript, '--rtt-ms', String(topo.netem ? 0 : o.rttMs), ...maps]), `latency proxy ${r.index}`, undefined, 'pipe')
      await proxy.waitFor((l) => l.startsWith('{"listening"'), 'the proxy to listen', 30_000)
      const home = o.replicaHomes ? join(o.replicaHomes, `replica-${String(r.index).padStart(2, '0')}`, 'wan') : join(work, `replica-${r.index}`)
      await mkdir(home, { recursive: true })
      links.push({ replica: r, proxy, watch: undefined as unknown as LineProcess, watchLog: [], live: join(home, 'live'), rsyncDir: join(home, 'rsync') })
    }

    const phases: PhaseFigures[] = []
    await flushDirtyPages()
    let before = await measureLinks(topo, links)
    const t0 = Date.now()
    for (const l of links) {
      l.watch = startProcess(
        nsArgv(l.replica.ns, [
          process.execPath, bin, 'pull', '--watch', '--from', `http://${l.replica.masterAddr}:${HTTP_PORT}`, '--target', l.live,
          '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--json', '--trees', String(o.trees), '--max-age', '0',
        ]),
        `the watch of replica ${l.replica.index}`,
        l.watchLog,
      )
    }
    let swaps = await swapsOf(links, first.id, links.map(() => 0), o.phaseTimeoutMs)
    let after = await measureLinks(topo, links)
    const firstOurs = figures(links, before, after, swaps.map((s) => (s - t0) / 1000), true, t0)
    let rsyncFigures: PhaseFigures['rsync'] = null
    if (o.rsync) {
      const b = await measureLinks(topo, links)
      const r = await rsyncAll(topo, links)
      rsyncFigures = { allSeconds: r.allSeconds, replicas: figures(links, b, await measureLinks(topo, links), r.seconds, false) }
    }
    phases.push({ phase: 'first full', snapshotId: first.id, buildSeconds: null, allSeconds: Math.max(...firstOurs.map((f) => f.seconds)), replicas: firstOurs, rsync: rsyncFigures })
    log(report(phases.at(-1)!))

    for (let h = 1; h <= o.hours; h++) {
      const m = await mutateCorpus({ out: tree, seed: `wan-hour-${h}` })
      log(`hour ${h}: ${m.modified} modified, ${m.deleted} deleted, ${m.added} added`)
      await flushDirtyPages()
      // Each watch has printed its last pull's result: its catch-up (--trees 3) is over too.
      const from = links.map((l) => l.watch.lines.length)
      before = await measureLinks(topo, links)
      const start = Date.now()
      const b = await build()
      swaps = await swapsOf(links, b.id, from, o.phaseTimeoutMs)
      after = await measureLinks(topo, links)
      const ours = figures(links, before, after, swaps.map((s) => (s - start) / 1000), true, b.endedAtMs)
      rsyncFigures = null
      if (o.rsync) {
        const rb = await measureLinks(topo, links)
        const r = await rsyncAll(topo, links)
        rsyncFigures = { allSeconds: r.allSeconds, replicas: figures(links, rb, await measureLinks(topo, links), r.seconds, false) }
      }
      phases.push({ phase: `hour ${h}`, snapshotId: b.id, buildSeconds: b.seconds, allSeconds: Math.max(...ours.map((f) => f.seconds)), replicas: ours, rsync: rsyncFigures })
      log(report(phases.at(-1)!))
    }

    log('comparing every replica with the master (contents too)')
    const verified: WanResult['verified'] = []
    for (const l of links) {
      verified.push({
        replica: l.replica.index,
        ours: await treeDifference(tree, `${l.live}/`, 'content'), // live is a symlink: compare what it points to
        rsync: o.rsync ? await treeDifference(tree, l.rsyncDir, 'content') : null,
      })
    }
    return {
      prefix: topo.prefix,
      netem: topo.netem,
      link: { rttMs: o.rttMs, rateMbit: o.rateMbit },
      files: o.files,
      replicas: o.replicas,
      trees: o.trees,
      machine: { cpus: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
      phases,
      verified,
      work,
    }
  } finally {
    cleanup()
    process.off('exit', cleanup)
    if (!o.keep) {
      await rm(work, { recursive: true, force: true })
      for (let i = 1; o.replicaHomes && i <= o.replicas; i++) await rm(join(o.replicaHomes, `replica-${String(i).padStart(2, '0')}`, 'wan'), { recursive: true, force: true })
    }
  }
}

function report(p: PhaseFigures): string {
  const ours = `ours ${p.allSeconds.toFixed(2)} s to every replica swapped (${p.replicas.map((r) => r.seconds.toFixed(2)).join(', ')}; pulls started ${p.replicas.map((r) => r.pullStartSeconds?.toFixed(2) ?? '-').join(', ')} s after the publication)`
  const theirs = p.rsync ? `; rsync ${p.rsync.allSeconds.toFixed(2)} s (${p.rsync.replicas.map((r) => r.seconds.toFixed(2)).join(', ')}), ratio ${(p.allSeconds / p.rsync.allSeconds).toFixed(2)}` : ''
  return `${p.phase}: ${ours}${theirs}`
}

/** The figures as a Markdown table, for BENCHMARKS.md. */
export function formatWanTable(r: WanResult): string {
  const sum = (xs: ReplicaFigures[], f: (x: ReplicaFigures) => number): number => xs.reduce((a, x) => a + f(x), 0)
  const lines = [
    '| phase | build | ours: build start to every replica swapped | each replica | publication to each pull start | on the wire (all replicas, down + up) | requests per replica | rsync -aW --delete to every replica | each replica | on the wire | ours / rsync |',
    '|---|---:|---:|---|---|---:|---:|---:|---|---:|---:|',
  ]
  for (const p of r.phases) {
    const wire = sum(p.replicas, (x) => x.bytesDown + x.bytesUp)
    const reqs = p.replicas.map((x) => x.requests).join(', ')
    const rs = p.rsync
    lines.push(
      `| ${p.phase} | ${p.buildSeconds === null ? '-' : `${p.buildSeconds.toFixed(2)} s`} | ${p.allSeconds.toFixed(2)} s | ${p.replicas.map((x) => x.seconds.toFixed(2)).join(', ')} | ${p.replicas.map((x) => (x.pullStartSeconds === null ? '-' : x.pullStartSeconds.toFixed(2))).join(', ')} | ${formatBytes(wire)} | ${reqs} | ` +
        (rs ? `${rs.allSeconds.toFixed(2)} s | ${rs.replicas.map((x) => x.seconds.toFixed(2)).join(', ')} | ${formatBytes(sum(rs.replicas, (x) => x.bytesDown + x.bytesUp))} | ${(p.allSeconds / rs.allSeconds).toFixed(2)} |` : '- | - | - | - |'),
    )
  }
  return lines.join('\n')
}

export function parseWanArgs(argv: string[]): WanOptions & { json: boolean; relays: RelayBenchOptions | null } {
  const { values } = parseArgs({
    args: argv,
    options: {
      files: { type: 'string', default: '20000' },
      replicas: { type: 'string', default: '3' },
      'rtt-ms': { type: 'string', default: '160' },
      'rate-mbit': { type: 'string', default: '100' },
      hours: { type: 'string', default: '2' },
      trees: { type: 'string', default: '3' },
      work: { type: 'string' },
      'replica-homes': { type: 'string' },
      keep: { type: 'boolean', default: false },
      'no-rsync': { type: 'boolean', default: false },
      'phase-timeout': { type: 'string', default: '1800' },
      json: { type: 'boolean', default: false },
      relays: { type: 'boolean', default: false },
      continents: { type: 'string', default: '3' },
      'per-continent': { type: 'string', default: '3' },
      'relay-rtt-ms': { type: 'string', default: '5' },
      rounds: { type: 'string', default: '2' },
    },
  })
  const replicas = wholeNumberFlag('--replicas', values.replicas, 1)
  if (replicas > 250) throw new UsageError('--replicas takes at most 250')
  return {
    files: wholeNumberFlag('--files', values.files, 1),
    replicas,
    rttMs: wholeNumberFlag('--rtt-ms', values['rtt-ms'], 0),
    rateMbit: wholeNumberFlag('--rate-mbit', values['rate-mbit'], 1),
    hours: wholeNumberFlag('--hours', values.hours, 0),
    trees: wholeNumberFlag('--trees', values.trees, 2),
    work: values.work === undefined ? undefined : resolve(values.work),
    ...(values['replica-homes'] === undefined ? {} : { replicaHomes: resolve(values['replica-homes']) }),
    keep: values.keep ?? false,
    rsync: !(values['no-rsync'] ?? false),
    phaseTimeoutMs: wholeNumberFlag('--phase-timeout', values['phase-timeout'], 1) * 1000,
    json: values.json ?? false,
    // --relays: continents of replicas, each with a relay (wan-relays.ts); --replicas and --no-rsync do not apply.
    relays: values.relays
      ? {
          files: wholeNumberFlag('--files', values.files, 1),
          continents: Math.min(250, wholeNumberFlag('--continents', values.continents, 1)),
          perContinent: Math.min(50, wholeNumberFlag('--per-continent', values['per-continent'], 1)),
          rttMs: wholeNumberFlag('--rtt-ms', values['rtt-ms'], 0),
          rateMbit: wholeNumberFlag('--rate-mbit', values['rate-mbit'], 1),
          relayRttMs: wholeNumberFlag('--relay-rtt-ms', values['relay-rtt-ms'], 0),
          trees: wholeNumberFlag('--trees', values.trees, 2),
          work: values.work === undefined ? undefined : resolve(values.work),
          keep: values.keep ?? false,
          phaseTimeoutMs: wholeNumberFlag('--phase-timeout', values['phase-timeout'], 1) * 1000,
          rounds: wholeNumberFlag('--rounds', values.rounds, 1),
        }
      : null,
  }
}

async function main(): Promise<void> {
  let opts: ReturnType<typeof parseWanArgs>
  try {
    opts = parseWanArgs(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`wan-bench: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = ExitCode.Usage
    return
  }
  // A signal must not leave namespaces behind: the exit handler removes them.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => process.exit(130))
  if (opts.relays) {
    const r = await runRelayBench(opts.relays)
    process.stdout.write(opts.json ? JSON.stringify(r) + '\n' : `${formatRelayTable(r)}\n`)
    const bad = r.verified.filter((v) => v.difference !== null)
    if (bad.length > 0) {
      process.stderr.write(`wan-bench: replicas differ from the master: ${JSON.stringify(bad)}\n`)
      process.exitCode = 1
    }
    return
  }
  const r = await runWanBench(opts)
  if (opts.json) process.stdout.write(JSON.stringify(r) + '\n')
  else process.stdout.write(`${formatWanTable(r)}\n`)
  const bad = r.verified.filter((v) => v.ours !== null || v.rsync !== null)
  if (bad.length > 0) {
    process.stderr.write(`wan-bench: replicas differ from the master: ${JSON.stringify(bad)}\n`)
    process.exitCode = 1
  }
}

if (isRunAsMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`wan-bench: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = err instanceof UsageError ? ExitCode.Usage : 1
  })
}
