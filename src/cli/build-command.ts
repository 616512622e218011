import { DEFAULT_FULL_POLICY } from '../core/full-policy.js'
import { buildSnapshot, type BuildResult } from '../master/build.js'
import { metricsWanted, observed, type MetricsFlags } from '../metrics/metrics-flags.js'
import type { MetricsOutputs } from '../metrics/metrics-outputs.js'
import { DEFAULT_GRACE_SECONDS } from '../master/prune.js'
import { readPrivateKeyFile } from './keys.js'
import { formatBytes, type Output } from './output.js'
import { describePrune } from '../master/prune.js'
import { parseS3Url } from '../store/s3-location.js'
import { describePublish, publishTo, type PublishTargetOptions } from './publish-command.js'
import { runOnSchedule, type ScheduleFlags } from './scheduler.js'

export interface BuildCommandOptions extends Partial<ScheduleFlags>, PublishTargetOptions, MetricsFlags {
  source: string
  store: string
  key?: string
  full?: boolean
  json?: boolean
  fullRatio?: number
  maxChain?: number
  /** Prune to this many snapshots after each build (see `snapshot prune`); absent: keep all. */
  keep?: number
  grace?: number
  /** s3://BUCKET/PREFIX: publish the store there after each build (unchanged ones too: a failed publish is retried). */
  publish?: string
  /** Any skipped entry fails the build (exit 17), nothing published. */
  strict?: boolean
  /** Seconds to wait for another build, prune or rollback holding the store's lock. */
  wait?: number
  quiet?: boolean
  /** Threads reading a full archive's small files (read-ahead.ts). */
  readers?: number
  /** find processes walking the source at once (tree-scan.ts). */
  scanners?: number
}

/** With --cron, keeps running and builds on the schedule; otherwise builds once. */
export async function buildCommand(opts: BuildCommandOptions, out: Output): Promise<void> {
  const cron = opts.cron
  const metrics = await openBuildMetrics(opts, cron !== undefined, out)
  const job = async (): Promise<void> => {
    try {
      await observed<BuildResult>(
        async (keep) => keep(await buildOnce(opts, out)),
        async (outcome, seconds) => metrics?.record(outcome, seconds),
        (l) => out.log(l),
      )
    } finally {
      await metrics?.outputs.afterRun()
    }
  }
  try {
    if (cron === undefined) return await job()
    await runOnSchedule(job, { ...opts, cron }, out)
  } finally {
    await metrics?.outputs.close()
  }
}

/** The build's metrics, or null when no --metrics-* flag asks for them (prom-client is not loaded). */
async function openBuildMetrics(
  opts: BuildCommandOptions,
  longRunning: boolean,
  out: Output,
): Promise<{ outputs: MetricsOutputs; record(outcome: { result: BuildResult | null; error: unknown }, seconds: number): Promise<void> } | null> {
  if (!metricsWanted(opts)) return null
  const [{ Registry }, master, { openMetricsOutputs }] = await Promise.all([import('prom-client'), import('../metrics/master-metrics.js'), import('../metrics/metrics-outputs.js')])
  const registry = new Registry()
  const m = master.createBuildMetrics(registry)
  const pm = opts.keep !== undefined ? master.createPruneMetrics(registry) : null // only when this command prunes
  const outputs = await openMetricsOutputs(opts, registry, { longRunning, command: 'build', log: (l) => out.log(l) })
  return {
    outputs,
    async record(outcome, seconds) {
      master.recordBuildOutcome(m, outcome, seconds, Date.now(), pm)
      await master.recordStoreBytes(m, opts.store)
    },
  }
}

async function buildOnce(opts: BuildCommandOptions, out: Output): Promise<BuildResult> {
  if (opts.publish) parseS3Url(opts.publish, '--publish') // a typo is a usage error before the build, not after
  const privateKey = opts.key ? await readPrivateKeyFile(opts.key) : null
  if (!privateKey) out.log('warning: no --key given: the snapshot is unsigned and replicas with --pubkey will refuse it')
  const r = await buildSnapshot({
    source: opts.source,
    store: opts.store,
    privateKey,
    forceFull: opts.full ?? false,
    policy: { deltaBytesRatio: opts.fullRatio ?? DEFAULT_FULL_POLICY.deltaBytesRatio, maxChain: opts.maxChain ?? DEFAULT_FULL_POLICY.maxChain },
    log: (l) => out.log(l),
    strict: opts.strict ?? false,
    lockWaitMs: (opts.wait ?? 0) * 1000,
    ...(opts.readers !== undefined ? { readerThreads: opts.readers } : {}),
    ...(opts.scanners !== undefined ? { scanProcesses: opts.scanners } : {}),
    ...(opts.keep !== undefined ? { keep: opts.keep, graceMs: (opts.grace ?? DEFAULT_GRACE_SECONDS) * 1000 } : {}),
  })
  const human = r.created
    ? [
        `snapshot ${r.id} (${r.kind}${r.parent !== null ? `, parent ${r.parent}` : ''}): ${r.changed} changed, ${r.deleted} deleted, ${r.filesRead} files read in ${r.seconds.toFixed(2)} s`,
        `tree: ${r.files} files, ${r.dirs} directories, ${r.links} symlinks, ${formatBytes(r.bytes)}`,
        ...(r.deltaBytes !== null ? [`delta: ${formatBytes(r.deltaBytes)}`] : []),
        ...(r.fullBytes !== null ? [`full: ${formatBytes(r.fullBytes)} (${r.fullReason})`] : []),
      ]
    : [`unchanged: the tree equals snapshot ${r.id}; no new snapshot (${r.seconds.toFixed(2)} s)`]
  const skipLine = describeSkips(r.skipped)
  if (skipLine) human.push(skipLine)
  if (r.setIdDropped > 0) human.push(`setuid/setgid bits dropped: ${r.setIdDropped} entries`)
  if (r.clockWentBack) human.push(`clock went backwards: ${r.clockWentBack.seconds.toFixed(3)} s before snapshot ${r.clockWentBack.parent}'s build time`)
  if (r.pruned) human.push(...describePrune(r.pruned).map((l) => `prune: ${l}`))
  // What the snapshot leaves out is said even with --quiet, on one line: an operator who silenced
  // the per-entry warnings must still learn that the replicas do not get the whole tree.
  if (skipLine && opts.quiet) process.stderr.write(`snapshot: warning: ${skipLine}\n`)
  const published = opts.publish
    ? await publishTo(opts.store, opts.publish, opts, out, '--publish').catch((err: unknown) => {
        out.log(`snapshot ${r.id} is in the store, but publishing it failed; the next build (or \`snapshot publish\`) sends what is missing`)
        throw err
      })
    : null
  if (published) human.push(...describePublish(published).map((l) => `publish: ${l}`))
  out.result(published ? { ...r, published } : r, human)
  return r
}

/** `skipped: 3 entries (vanished 2, special 1)`, or null when nothing was skipped. */
export function describeSkips(s: { count: number; byReason: Partial<Record<string, number>> }): string | null {
  if (s.count === 0) return null
  const reasons = Object.entries(s.byReason).sort(([a], [b]) => (a < b ? -1 : 1)).map(([reason, n]) => `${reason} ${n}`).join(', ')
  return `skipped: ${s.count} ${s.count === 1 ? 'entry' : 'entries'} left out of the snapshot (${reasons})`
}
