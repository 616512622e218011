import { MirroredSource, type MirrorReport } from '../store/mirrored-source.js'
import { openStoreFromFlags, type SourceFlags } from './open-sources.js'
import { UsageError } from '../core/errors.js'
import { checkFreshness } from '../core/freshness.js'
import { metricsWanted, observed, type MetricsFlags } from '../metrics/metrics-flags.js'
import type { MetricsOutputs } from '../metrics/metrics-outputs.js'
import type { ReplicaObserver } from '../metrics/replica-observer.js'
import { pull, type PullResult } from '../replica/pull.js'
import { makeProgress } from './progress.js'
import { readTrustedKeys } from './keys.js'
import { formatBytes, type Output } from './output.js'
import { runOnSchedule, type ScheduleFlags } from './scheduler.js'
import { runPullWatch, type WatchFlags } from './watch-command.js'
import { WATCH_DEFAULTS } from '../replica/watch-policy.js'

export interface PullCommandOptions extends Partial<ScheduleFlags>, Partial<Omit<WatchFlags, 'from' | 'timeout'>>, MetricsFlags, SourceFlags {
  watch?: boolean
  /** One store, or several mirrors of it (a failover list). */
  from: string[]
  target: string
  pubkey: string[]
  swap?: boolean
  json?: boolean
  state?: string
  trees: number
  token?: string
  retries: number
  timeout: number
  /** --limit-rate, in bytes per second */
  limitRate?: number
  writers: number
  wait: number
  unpin?: boolean
  maxDelete: number
  force?: boolean
  preSwap?: string
  postSwap?: string
  hookTimeout: number
  maxAge: number
  quiet?: boolean
}

/** With --watch, pulls each new publication; with --cron, on the schedule; otherwise once. */
export async function pullCommand(opts: PullCommandOptions, out: Output): Promise<void> {
  const cron = opts.cron
  if (opts.watch && cron !== undefined) throw new UsageError('--watch and --cron are two ways to keep pulling: give one')
  const longRunning = cron !== undefined || opts.watch === true
  const metrics = await openPullMetrics(opts, longRunning, out)
  // One pull, with its outcome recorded, whichever loop runs it; throws StaleError after a pull
  // that worked against a store whose newest snapshot is too old.
  const observedPull = async (): Promise<PullResult> => {
    let pulled: PullResult | null = null
    try {
      await observed<PullResult>(
        async (keep) => {
          const r = await pullOnce(opts, out)
          keep(r)
          pulled = r
          checkFreshness(r.latestCreated, opts.maxAge, Date.now(), r.latestParentCreated ?? null)
        },
        (outcome, seconds) => metrics?.observer.observe(outcome, seconds),
        (l) => out.log(l),
      )
    } finally {
      await metrics?.outputs.afterRun()
    }
    return pulled!
  }
  try {
    if (longRunning && metrics) await metrics.observer.refresh().catch(() => null) // what the replica serves, before the first pull ends
    if (opts.watch) {
      const d = WATCH_DEFAULTS
      // The watch checks the first --from for new pointers (the next ones while it fails); each pull then takes the newest valid one among all.
      const flags = { from: opts.from, timeout: opts.timeout, interval: opts.interval ?? d.intervalMs / 1000, longPoll: opts.longPoll ?? 30, maxBackoff: opts.maxBackoff ?? d.backoffMaxMs / 1000, token: opts.token, quiet: opts.quiet ?? false }
      return await runPullWatch(observedPull, flags, out)
    }
    if (cron !== undefined) return await runOnSchedule(async () => void (await observedPull()), { ...opts, cron }, out)
    await observedPull()
  } finally {
    await metrics?.outputs.close()
  }
}

/** The replica's metrics and /status, or null when no --metrics-* flag asks for them (prom-client is not loaded). */
async function openPullMetrics(opts: PullCommandOptions, longRunning: boolean, out: Output): Promise<{ outputs: MetricsOutputs; observer: ReplicaObserver } | null> {
  if (!metricsWanted(opts)) return null
  const [{ Registry }, { ReplicaObserver }, { openMetricsOutputs }] = await Promise.all([import('prom-client'), import('../metrics/replica-observer.js'), import('../metrics/metrics-outputs.js')])
  const registry = new Registry()
  const observer = new ReplicaObserver(registry, { target: opts.target, ...(opts.state ? { stateDir: opts.state } : {}), trees: opts.trees, source: opts.from.join(' ') })
  const outputs = await openMetricsOutputs(opts, registry, { longRunning, command: 'pull', status: () => observer.status(), log: (l) => out.log(l) })
  return { outputs, observer }
}

/** One pull, its result printed. */
async function pullOnce(opts: PullCommandOptions, out: Output): Promise<PullResult> {
  const trust = await readTrustedKeys(opts.pubkey)
  if (!trust.checked) out.log('warning: no --pubkey given: the pointer is not authenticated')
  const store = openStoreFromFlags(opts, trust, (l) => out.log(l))
  const pulled = await pull({
    store,
    target: opts.target,
    ...(opts.state ? { stateDir: opts.state } : {}),
    swap: opts.swap ?? false,
    trees: opts.trees,
    writerThreads: opts.writers,
    lockWaitMs: opts.wait * 1000,
    unpin: opts.unpin ?? false,
    maxDeletePercent: opts.maxDelete,
    force: opts.force ?? false,
    // The catch-up after the swap yields the CPU; a --cron or --watch process keeps running, so
    // only where it may raise its priority back afterwards.
    lowPriorityCatchUp: (opts.cron === undefined && !opts.watch) || process.getuid?.() === 0,
    hooks: { ...(opts.preSwap ? { preSwap: opts.preSwap } : {}), ...(opts.postSwap ? { postSwap: opts.postSwap } : {}), timeoutMs: opts.hookTimeout * 1000 },
    progress: makeProgress({ enabled: !opts.quiet && !opts.json }),
    log: (l) => out.log(l),
  })
  // With several --from, which mirror served and which were skipped (down, stale, invalid).
  const mirrors = store.source instanceof MirroredSource ? store.source.reports : undefined
  const r = mirrors ? { ...pulled, mirrors } : pulled
  const human =
    r.action === 'up-to-date'
      ? [`up to date: ${opts.target} serves snapshot ${r.id}`]
      : r.action === 'pinned'
      ? [`pinned: ${opts.target} stays at snapshot ${r.id} (\`snapshot pull --unpin\` resumes)`]
      : [
          `${r.action === 'swapped' ? 'swapped' : 'staged (run `snapshot swap` to go live)'}: snapshot ${r.id}${r.previousId !== null ? ` (was ${r.previousId})` : ''} in ${r.seconds.toFixed(2)} s`,
          ...(r.plan ? [`downloaded ${formatBytes(r.plan.downloadBytes)}; wrote ${r.applied.filesWritten} files, deleted ${r.applied.deleted} paths`] : []),
          ...(r.catchUp && !r.catchUp.error ? [`caught up the spare tree ${r.catchUp.slot} to snapshot ${r.catchUp.id} (${r.catchUp.filesWritten} files) in ${r.catchUp.seconds.toFixed(2)} s`] : []),
        ]
  if (mirrors) human.push(...describeMirrors(mirrors))
  out.result(r, human)
  return r
}

/** One line per mirror: the one chosen, and why each other one was or was not used. */
export function describeMirrors(mirrors: readonly MirrorReport[]): string[] {
  return mirrors.map((m) =>
    m.status === 'chosen' || m.status === 'current'
      ? `mirror ${m.source}: ${m.status}, snapshot ${m.latestId}`
      : m.status === 'stale'
        ? `mirror ${m.source}: stale (snapshot ${m.latestId}), skipped`
        : `mirror ${m.source}: ${m.status}, skipped [${m.code}] ${m.error}`,
  )
}
