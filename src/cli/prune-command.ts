import type { Command } from '@commander-js/extra-typings'
import { describePrune, pruneStore, type PruneResult } from '../master/prune.js'
import { metricsWanted, observed, type MetricsFlags } from '../metrics/metrics-flags.js'
import { metricsFileOption } from './metrics-options.js'
import { wholeNumber } from './option-parsers.js'
import { makeOutput, type Output } from './output.js'
import { graceOption, jsonOption, quietOption, waitOption } from './common-options.js'

export interface PruneCommandOptions extends MetricsFlags {
  store: string
  keep: number
  grace: number
  dryRun?: boolean
  wait: number
  json?: boolean
}

export async function pruneCommand(opts: PruneCommandOptions, out: Output): Promise<void> {
  const metrics = await openPruneMetrics(opts, out)
  try {
    await observed<PruneResult>(
      async (keep) => {
        const r = await pruneStore({ store: opts.store, keep: opts.keep, graceMs: opts.grace * 1000, dryRun: opts.dryRun ?? false, lockWaitMs: opts.wait * 1000, log: (l) => out.log(l) })
        keep(r)
        out.result(r, describePrune(r))
      },
      (outcome) => metrics?.record(outcome),
      (l) => out.log(l),
    )
  } finally {
    await metrics?.outputs.afterRun()
  }
}

/** The prune's metrics, or null when --metrics-file is not given (prom-client is not loaded). */
async function openPruneMetrics(opts: PruneCommandOptions, out: Output) {
  if (!metricsWanted(opts)) return null
  const [{ Registry }, master, { openMetricsOutputs }] = await Promise.all([import('prom-client'), import('../metrics/master-metrics.js'), import('../metrics/metrics-outputs.js')])
  const registry = new Registry()
  const m = master.createPruneMetrics(registry)
  const outputs = await openMetricsOutputs(opts, registry, { longRunning: false, command: 'prune', log: (l) => out.log(l) })
  return { outputs, record: (outcome: { result: PruneResult | null; error: unknown }) => master.recordPruneOutcome(m, outcome) }
}

export function registerPruneCommand(program: Command): void {
  program
    .command('prune')
    .description('Remove old snapshots from the store, never what a replica needs to reach the latest, plus leftovers of builds that died.')
    .requiredOption('--store <dir>', 'the store directory')
    .requiredOption('--keep <n>', 'keep the N most recent snapshots (each with the full and deltas that rebuild it), besides the latest full and the deltas after it', wholeNumber('--keep', 1, 1_000_000))
    .addOption(graceOption('leave what a pull or build in progress may still use for this long'))
    .option('--dry-run', 'say what would be removed, remove nothing')
    .addOption(waitOption('wait this long for a build holding the store\'s lock'))
    .addOption(jsonOption())
    .addOption(quietOption())
    .addOption(metricsFileOption())
    .action(async (o) => pruneCommand(o, makeOutput(o)))
}
