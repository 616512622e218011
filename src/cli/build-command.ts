import { DEFAULT_FULL_POLICY } from '../core/full-policy.js'
import { Registry } from 'prom-client'
import { buildSnapshot, type BuildResult } from '../master/build.js'
import { createBuildMetrics, createPruneMetrics, recordBuildOutcome, recordStoreBytes } from '../metrics/master-metrics.js'
import { openMetricsOutputs, observed, type MetricsFlags } from '../metrics/metrics-outputs.js'
import { DEFAULT_GRACE_SECONDS } from '../master/prune.js'
import { readPrivateKeyFile } from './keys.js'
import { formatBytes, type Output } from './output.js'
import { describePrune } from './prune-command.js'
import { runOnSchedule, type ScheduleFlags } from './scheduler.js'

export interface BuildCommandOptions extends Partial<ScheduleFlags>, MetricsFlags {
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
}

/** With --cron, keeps running and builds on the schedule; otherwise builds once. */
export async function buildCommand(opts: BuildCommandOptions, out: Output): Promise<void> {
  const cron = opts.cron
  const registry = new Registry()
  const m = createBuildMetrics(registry)
  const pm = opts.keep !== undefined ? createPruneMetrics(registry) : null // only when this command prunes
  const metrics = await openMetricsOutputs(opts, registry, { longRunning: cron !== undefined, command: 'build', log: (l) => out.log(l) })
  const job = async (): Promise<void> => {
    try {
      await observed<BuildResult>(
        async (keep) => keep(await buildOnce(opts, out)),
        async (outcome, seconds) => {
          if (!metrics.enabled) return
          recordBuildOutcome(m, outcome, seconds, Date.now(), pm)
          await recordStoreBytes(m, opts.store)
        },
        (l) => out.log(l),
      )
    } finally {
      await metrics.afterRun()
    }
  }
  try {
    if (cron === undefined) return await job()
    await runOnSchedule(job, { ...opts, cron }, out)
  } finally {
    await metrics.close()
  }
}

async function buildOnce(opts: BuildCommandOptions, out: Output): Promise<BuildResult> {
  const privateKey = opts.key ? await readPrivateKeyFile(opts.key) : null
  if (!privateKey) out.log('warning: no --key given: the snapshot is unsigned and replicas with --pubkey will refuse it')
  const r = await buildSnapshot({
    source: opts.source,
    store: opts.store,
    privateKey,
    forceFull: opts.full ?? false,
    policy: { deltaBytesRatio: opts.fullRatio ?? DEFAULT_FULL_POLICY.deltaBytesRatio, maxChain: opts.maxChain ?? DEFAULT_FULL_POLICY.maxChain },
    log: (l) => out.log(l),
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
  if (r.pruned) human.push(...describePrune(r.pruned).map((l) => `prune: ${l}`))
  out.result(r, human)
  return r
}
