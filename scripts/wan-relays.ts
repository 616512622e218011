/**
 * `npm run bench:wan -- --relays [--files N] [--per-continent 3] [--continents 3] [--rtt-ms 160]
 * [--rate-mbit 100] [--relay-rtt-ms 5] [--rounds 2]`, as root: the WAN benchmark with relays (issue 21).
 *
 * Three "continents", each a network namespace joined to the origin's namespace by one link of
 * `--rtt-ms` round trip and `--rate-mbit` each way (the ocean: wan-netns.ts shapes it, tbf plus
 * wan-latency-proxy.ts where the kernel has no netem). On each continent: three replicas and a
 * relay (`snapshot mirror --watch` into a directory served by `snapshot serve`), the replicas
 * reaching their relay through a latency proxy of `--relay-rtt-ms` (5 ms: next door). Every
 * replica runs `snapshot pull --watch`, as deployed.
 *
 * Phases, in one run, each timed from the start of `snapshot build` (the first full: from the
 * watches' start) to all replicas swapped, with the origin's egress (the bytes its end of the
 * three ocean links sent):
 *   1. the first full, without relays: every replica pulls from the origin;
 *   (the relays start and copy the chain: reported as the relays' setup);
 *   2. a warm-up hour without relays (not counted: the hour after a first full also pays for what
 *      the full left behind), then `--rounds` pairs of hours of change, interleaved so that the machine's drift (its disk
 *      flushes, other work) falls on both alike: one without relays (no mirror runs; the
 *      replicas' watches name only the origin), one with (the mirrors catch up first, off the
 *      clock; the watches name `--from RELAY --from ORIGIN`);
 *   3. an hour of change, with relays, the first continent's relay killed (its server and its
 *      mirror) as the build starts: its replicas fail over to the origin.
 * At the end every replica is compared with the master, contents included.
 */
import { mkdir, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { UsageError } from '../src/core/errors.js'
import { ensureTool, flushDirtyPages, formatBytes, logLine, treeDifference } from './bench-lib.js'
import { mutateCorpus } from './corpus.js'
import { bin, prepareMaster, proxyScript, startProcess, stopAll, type LineProcess } from './wan-processes.js'
import { createTopology, destroyTopology, linkBytes, nsArgv, type Replica, type Topology } from './wan-netns.js'

const ORIGIN_PORT = 8080
const RELAY_PORT = 8081
/** On each continent's loopback: the proxy that puts the relay `--relay-rtt-ms` away. */
const RELAY_NEAR = '127.0.0.2'

export interface RelayBenchOptions {
  files: number
  continents: number
  perContinent: number
  rttMs: number
  rateMbit: number
  relayRttMs: number
  trees: number
  work: string | undefined
  keep: boolean
  phaseTimeoutMs: number
  /** Pairs of hours, one without relays and one with, interleaved so the machine's drift hits both alike. */
  rounds: number
}

export interface RelayPhase {
  phase: string
  relays: boolean
  snapshotId: number
  buildSeconds: number | null
  /** From the build's start (the first full: the watches' start) to the last replica swapped. */
  allSeconds: number
  replicaSeconds: number[]
  /** From the same start to each replica holding the hour's objects (its apply begins): the network's part. */
  objectsSeconds: (number | null)[]
  /** From the same start to each running relay having copied the hour (its mirror's result line). */
  relaySeconds: (number | null)[]
  /** From the same start to each replica's watch starting its pull. */
  pullStartSeconds: (number | null)[]
  /** Bytes the origin sent over the ocean links during the phase, and per continent. */
  originEgress: number
  egressByContinent: number[]
  /** What else happened in the phase (a relay killed). */
  note?: string
}

export interface RelayBenchResult {
  prefix: string
  netem: boolean
  link: { rttMs: number; rateMbit: number; relayRttMs: number }
  files: number
  continents: number
  perContinent: number
  phases: RelayPhase[]
  relaySetup: { originEgress: number; seconds: number }
  verified: { replica: string; difference: string | null }[]
}

interface Continent {
  link: Replica
  proxy: LineProcess
  relayDir: string
  relayServe: LineProcess | null
  relayProxy: LineProcess | null
  mirror: LineProcess | null
  replicas: ReplicaRun[]
}

interface ReplicaRun {
  name: string
  live: string
  watch: LineProcess | null
  log: string[]
}

const originUrl = (c: Continent): string => `http://${c.link.masterAddr}:${ORIGIN_PORT}`
const relayUrl = `http://${RELAY_NEAR}:${ORIGIN_PORT}`

function egress(topo: Topology, continents: Continent[]): number[] {
  return continents.map((c) => linkBytes(topo, c.link).down)
}

async function stopProcess(p: LineProcess | null, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return
  const exited = new Promise<void>((done) => p.child.once('exit', () => done()))
  p.child.kill(signal)
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 30_000)
  await exited
  clearTimeout(timer)
}

/** Waits until every replica's watch printed a result (`swapped`, or any action with `anyAction`) for snapshot `id`. */
async function resultsOf(replicas: ReplicaRun[], id: number, from: number[], timeoutMs: number, anyAction = false): Promise<number[]> {
  const lines = await Promise.all(
    replicas.map((r, i) =>
      r.watch!.waitFor(
        (line) => {
          if (!line.startsWith('{')) return false
          const p = JSON.parse(line) as { action?: string; id?: number }
          return p.id === id && (anyAction || p.action === 'swapped')
        },
        `${r.name} to swap snapshot ${id}`,
        timeoutMs,
        from[i],
      ),
    ),
  )
  return lines.map((l) => (JSON.parse(l) as { swappedAtMs: number | null }).swappedAtMs ?? Date.now())
}

export async function runRelayBench(o: RelayBenchOptions, log: (line: string) => void = logLine): Promise<RelayBenchResult> {
  if (process.getuid?.() !== 0) throw new UsageError('the WAN benchmark makes network namespaces: run it as root')
  await ensureTool('ip', 'iproute2', log)
  await ensureTool('tc', 'iproute2', log)
  const { work, tree, store, keys, build } = await prepareMaster(o.work, o.files, 'wan-relays', log)
  const pub = join(keys, 'snapshot.pub')

  const topo = createTopology(o.continents, { rttMs: o.rttMs, rateMbit: o.rateMbit })
  const cleanup = (): void => {
    stopAll()
    destroyTopology(topo.prefix)
  }
  process.once('exit', cleanup)
  log(`namespaces ${topo.prefix}-*: ${o.continents} continents of ${o.perContinent} replicas and a relay; the ocean: ${o.rttMs} ms round trip, ${o.rateMbit} Mbit/s each way per continent (${topo.netem ? 'netem' : 'tbf + latency proxy'}); a relay ${o.relayRttMs} ms from its replicas`)
  try {
    const first = await build()
    log(`built snapshot ${first.id} (full) in ${first.seconds.toFixed(2)} s`)
    const serve = startProcess(nsArgv(topo.masterNs, [process.execPath, bin, 'serve', '--store', store, '--host', '127.0.0.1', '--port', String(ORIGIN_PORT), '--json', '--quiet']), 'the origin\'s snapshot serve')
    await serve.waitFor((l) => l.startsWith('{'), 'serve to listen', 30_000)

    const continents: Continent[] = []
    for (const link of topo.replicas) {
      const proxy = startProcess(
        nsArgv(topo.masterNs, [process.execPath, proxyScript, '--rtt-ms', String(topo.netem ? 0 : o.rttMs), '--map', `${link.masterAddr}:${ORIGIN_PORT}=127.0.0.1:${ORIGIN_PORT}`]),
        `ocean proxy ${link.index}`,
        undefined,
        'pipe',
      )
      await proxy.waitFor((l) => l.startsWith('{"listening"'), 'the proxy to listen', 30_000)
      const home = join(work, `continent-${link.index}`)
      await mkdir(home, { recursive: true })
      const replicas = Array.from({ length: o.perContinent }, (_, i): ReplicaRun => ({ name: `replica ${link.index}.${i + 1}`, live: join(home, `replica-${i + 1}`, 'live'), watch: null, log: [] }))
      for (const r of replicas) await mkdir(dirname(r.live), { recursive: true })
      continents.push({ link, proxy, relayDir: join(home, 'relay'), relayServe: null, relayProxy: null, mirror: null, replicas })
    }
    const all = (): ReplicaRun[] => continents.flatMap((c) => c.replicas)
    const startWatches = (relays: boolean): void => {
      for (const c of continents) {
        for (const r of c.replicas) {
          const from = relays ? ['--from', relayUrl, '--from', originUrl(c)] : ['--from', originUrl(c)]
          r.watch = startProcess(
            nsArgv(c.link.ns, [process.execPath, bin, 'pull', '--watch', ...from, '--target', r.live, '--pubkey', pub, '--swap', '--json', '--trees', String(o.trees), '--max-age', '0', '--timeout', '10']),
            `the watch of ${r.name}`,
            r.log,
          )
        }
      }
    }
    const phases: RelayPhase[] = []
    const phase = async (name: string, relays: boolean, timedFrom: number, id: number, buildSeconds: number | null, before: number[], from: number[], note?: string): Promise<void> => {
      const swaps = await resultsOf(all(), id, from, o.phaseTimeoutMs)
      const after = egress(topo, continents)
      const byContinent = after.map((a, i) => a - before[i]!)
      const seconds = swaps.map((s) => (s - timedFrom) / 1000)
      const objectsSeconds = all().map((r) => {
        const at = r.watch!.applyStarts.find((t) => t >= timedFrom)
        return at === undefined ? null : (at - timedFrom) / 1000
      })
      const relaySeconds = continents.map((c) => {
        if (!relays || !c.mirror) return null
        const i = c.mirror.lines.findIndex((l) => l.startsWith('{') && (JSON.parse(l) as { id?: number }).id === id)
        return i < 0 ? null : (c.mirror.lineTimes[i]! - timedFrom) / 1000
      })
      const pullStartSeconds = all().map((r) => {
        const at = r.watch!.pullStarts.find((t) => t >= timedFrom)
        return at === undefined ? null : (at - timedFrom) / 1000
      })
      phases.push({ phase: name, relays, snapshotId: id, buildSeconds, allSeconds: Math.max(...seconds), replicaSeconds: seconds, objectsSeconds, relaySeconds, pullStartSeconds, originEgress: byContinent.reduce((a, b) => a + b, 0), egressByContinent: byContinent, ...(note ? { note } : {}) })
      log(report(phases.at(-1)!))
    }
    const hour = async (name: string, relays: boolean, h: number, atBuildStart?: () => Promise<void>, note?: string): Promise<number> => {
      const m = await mutateCorpus({ out: tree, seed: `wan-relays-hour-${h}` })
      log(`${name}: ${m.modified} modified, ${m.deleted} deleted, ${m.added} added`)
      await flushDirtyPages()
      const from = all().map((r) => r.watch!.lines.length)
      const before = egress(topo, continents)
      const start = Date.now()
      const [b] = await Promise.all([build(), atBuildStart?.()])
      await phase(name, relays, start, b.id, b.seconds, before, from, note)
      return b.id
    }
    const startMirror = (c: Continent): void => {
      c.mirror = startProcess(
        nsArgv(c.link.ns, [process.execPath, bin, 'mirror', '--watch', '--from', originUrl(c), '--to', c.relayDir, '--pubkey', pub, '--json', '--max-age', '0', '--timeout', '10']),
        `the relay's mirror on continent ${c.link.index}`,
      )
    }
    const mirrorsCopied = async (id: number): Promise<void> => {
      for (const c of continents) await c.mirror!.waitFor((l) => l.startsWith('{') && (JSON.parse(l) as { id: number }).id === id, `the relay of continent ${c.link.index} to copy snapshot ${id}`, o.phaseTimeoutMs)
    }
    /** Every replica's watch restarted, naming its relay first or only the origin; each one's first check done. */
    const rewatch = async (relays: boolean, id: number): Promise<void> => {
      for (const r of all()) await stopProcess(r.watch)
      startWatches(relays)
      await resultsOf(all(), id, all().map(() => 0), o.phaseTimeoutMs, true) // each watch's first check: up to date
    }

    // 1. the first full, without relays
    await flushDirtyPages()
    let before = egress(topo, continents)
    const t0 = Date.now()
    startWatches(false)
    await phase('first full', false, t0, first.id, null, before, all().map(() => 0))
    let current = first.id

    // the relays start and copy the current chain
    before = egress(topo, continents)
    const setupStart = Date.now()
    for (const c of continents) {
      await mkdir(c.relayDir, { recursive: true }) // empty until the mirror's first copy: serve answers 404, and replicas ask the origin
      c.relayServe = startProcess(nsArgv(c.link.ns, [process.execPath, bin, 'serve', '--store', c.relayDir, '--host', '127.0.0.1', '--port', String(RELAY_PORT), '--json', '--quiet']), `the relay's serve on continent ${c.link.index}`)
      c.relayProxy = startProcess(nsArgv(c.link.ns, [process.execPath, proxyScript, '--rtt-ms', String(o.relayRttMs), '--map', `${RELAY_NEAR}:${ORIGIN_PORT}=127.0.0.1:${RELAY_PORT}`]), `relay proxy ${c.link.index}`, undefined, 'pipe')
      startMirror(c)
    }
    for (const c of continents) {
      await c.relayServe!.waitFor((l) => l.startsWith('{'), 'the relay\'s serve to listen', 30_000)
      await c.relayProxy!.waitFor((l) => l.startsWith('{"listening"'), 'the relay proxy to listen', 30_000)
    }
    await mirrorsCopied(current)
    const setup = { originEgress: egress(topo, continents).reduce((a, b, i) => a + b - before[i]!, 0), seconds: (Date.now() - setupStart) / 1000 }
    log(`relays set up: they copied snapshot ${current}'s chain in ${setup.seconds.toFixed(2)} s; the origin sent ${formatBytes(setup.originEgress)}`)

    // 2. hours without relays and with, interleaved: no mirror runs in an hour without relays. A
    // warm-up hour first: the hour after a first full also waits for what the full left behind
    // (the spare trees' catch-up, dirty pages), and would weigh on whichever kind came first.
    let h = 0
    for (const c of continents) await stopProcess(c.mirror)
    await rewatch(false, current)
    current = await hour(`hour ${++h}`, false, h, undefined, 'warm-up, not counted')
    for (let round = 1; round <= o.rounds; round++) {
      for (const c of continents) await stopProcess(c.mirror)
      await rewatch(false, current)
      current = await hour(`hour ${++h}`, false, h)
      for (const c of continents) startMirror(c)
      await mirrorsCopied(current) // the hour they missed: setup, not counted
      await rewatch(true, current)
      current = await hour(`hour ${++h}`, true, h)
    }
    // 3. an hour with relays, one of them killed as the build starts
    const victim = continents[0]!
    await hour(`hour ${++h}`, true, h, async () => {
      await stopProcess(victim.relayServe, 'SIGKILL')
      await stopProcess(victim.mirror, 'SIGKILL')
    }, `relay ${victim.link.index} killed as the build started: its replicas fail over to the origin`)

    if (process.env.WAN_DEBUG) for (const r of all()) log(`${r.name}:\n${r.log.slice(-40).join('\n')}`)
    log('comparing every replica with the master (contents too)')
    const verified: RelayBenchResult['verified'] = []
    for (const r of all()) verified.push({ replica: r.name, difference: await treeDifference(tree, `${r.live}/`, 'content') })
    return {
      prefix: topo.prefix,
      netem: topo.netem,
      link: { rttMs: o.rttMs, rateMbit: o.rateMbit, relayRttMs: o.relayRttMs },
      files: o.files,
      continents: o.continents,
      perContinent: o.perContinent,
      phases,
      relaySetup: setup,
      verified,
    }
  } finally {
    cleanup()
    process.off('exit', cleanup)
    if (!o.keep) await rm(work, { recursive: true, force: true })
  }
}

const secondsList = (xs: readonly (number | null)[]): string => xs.map((s) => (s === null ? '-' : s.toFixed(2))).join(', ')
const maxOf = (xs: readonly (number | null)[]): number => Math.max(...xs.map((x) => x ?? NaN))

function report(p: RelayPhase): string {
  return `${p.phase} (${p.relays ? 'relays' : 'no relays'}): snapshot ${p.snapshotId}, ${p.allSeconds.toFixed(2)} s to all ${p.replicaSeconds.length} swapped (${p.replicaSeconds.map((s) => s.toFixed(2)).join(', ')}), ${maxOf(p.objectsSeconds).toFixed(2)} s to all holding the objects (${secondsList(p.objectsSeconds)}; pulls started ${secondsList(p.pullStartSeconds)}${p.relays ? `; relays copied the hour at ${secondsList(p.relaySeconds)}` : ''}); the origin sent ${formatBytes(p.originEgress)} (${p.egressByContinent.map(formatBytes).join(', ')} per continent)${p.note ? `; ${p.note}` : ''}`
}

/** The figures as a Markdown table, for BENCHMARKS.md. */
export function formatRelayTable(r: RelayBenchResult): string {
  const lines = [
    `${r.continents} continents x ${r.perContinent} replicas, ${r.files} files; ocean ${r.link.rttMs} ms / ${r.link.rateMbit} Mbit/s per continent; relay ${r.link.relayRttMs} ms from its replicas (${r.netem ? 'netem' : 'tbf + latency proxy'})`,
    '',
    '| phase | relays | build | build start to all swapped | each replica | build start to all holding the objects | each replica | origin egress | per continent |',
    '|---|---|---:|---:|---|---:|---|---:|---|',
  ]
  for (const p of r.phases) {
    lines.push(
      `| ${p.phase}${p.note ? ` (${p.note})` : ''} | ${p.relays ? 'yes' : 'no'} | ${p.buildSeconds === null ? '-' : `${p.buildSeconds.toFixed(2)} s`} | ${p.allSeconds.toFixed(2)} s | ${p.replicaSeconds.map((s) => s.toFixed(2)).join(', ')} | ${maxOf(p.objectsSeconds).toFixed(2)} s | ${secondsList(p.objectsSeconds)} | ${formatBytes(p.originEgress)} | ${p.egressByContinent.map(formatBytes).join(', ')} |`,
    )
  }
  // The counted hours of each kind (not the warm-up, not the hour a relay was killed), averaged.
  const meanOf = (relays: boolean, pick: (p: RelayPhase) => number): number => {
    const hours = r.phases.filter((p) => p.phase.startsWith('hour') && p.relays === relays && p.note === undefined)
    return hours.reduce((a, p) => a + pick(p), 0) / hours.length
  }
  const mean = (relays: boolean): number => meanOf(relays, (p) => p.allSeconds)
  const objectsMean = (relays: boolean): number => meanOf(relays, (p) => maxOf(p.objectsSeconds))
  const egressMean = (relays: boolean): number => meanOf(relays, (p) => p.originEgress)
  lines.push(
    '',
    `Interleaved hours, mean: all swapped ${mean(false).toFixed(2)} s without relays, ${mean(true).toFixed(2)} s with (${(mean(true) / mean(false)).toFixed(2)}x); all holding the objects ${objectsMean(false).toFixed(2)} s without, ${objectsMean(true).toFixed(2)} s with (${(objectsMean(true) / objectsMean(false)).toFixed(2)}x); the origin sent ${formatBytes(egressMean(false))} without, ${formatBytes(egressMean(true))} with (${(egressMean(true) / egressMean(false)).toFixed(2)}x).`,
    `Relays' setup (copying the chain once, after the first full): ${formatBytes(r.relaySetup.originEgress)} from the origin in ${r.relaySetup.seconds.toFixed(2)} s.`,
  )
  return lines.join('\n')
}
