import type { Command } from '@commander-js/extra-typings'
import { describePrune, pruneStore, type PruneResult } from '../master/prune.js'
import { Registry } from 'prom-client'
import { createPruneMetrics, recordPruneOutcome } from '../metrics/master-metrics.js'
import { openMetricsOutputs, observed, type MetricsFlags } from '../metrics/metrics-outputs.js'
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
  const registry = new Registry()
  const m = createPruneMetrics(registry)
  const metrics = await openMetricsOutputs(opts, registry, { longRunning: false, command: 'prune', log: (l) => out.log(l) })
  try {
    await observed<PruneResult>(
      async (keep) => {
        const r = await pruneStore({ store: opts.store, keep: opts.keep, graceMs: opts.grace * 1000, dryRun: opts.dryRun ?? false, lockWaitMs: opts.wait * 1000, log: (l) => out.log(l) })
        keep(r)
        out.result(r, describePrune(r))
      },
      (outcome) => recordPruneOutcome(m, outcome),
      (l) => out.log(l),
    )
  } finally {
    await metrics.afterRun()
  }
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
