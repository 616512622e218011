import { collectDefaultMetrics, type Registry } from 'prom-client'
import { UsageError } from '../core/errors.js'
import type { MetricsFlags } from './metrics-flags.js'
import { seedFromMetricsFile, writeMetricsFile } from './metrics-file.js'
import { startMetricsServer } from './metrics-server.js'

export interface MetricsOutputs {
  /** False when neither flag was given: the command need not record anything. */
  readonly enabled: boolean
  /** Where `/metrics` is served, if it is. */
  readonly url: string | null
  /** After each run: rewrites the metrics file, if any. Never throws: a metrics failure must not fail the job. */
  afterRun(): Promise<void>
  close(): Promise<void>
}

/**
 * Opens what `--metrics-listen` and `--metrics-file` ask for, around one registry. A process that
 * runs once has nobody to scrape it: `--metrics-listen` there is a usage error, not a silent no-op.
 */
export async function openMetricsOutputs(
  flags: MetricsFlags,
  registry: Registry,
  o: { longRunning: boolean; command: string; status?: () => Promise<unknown>; log: (line: string) => void },
): Promise<MetricsOutputs> {
  if (flags.metricsListen && !o.longRunning) {
    throw new UsageError(`--metrics-listen needs a process that keeps running (${o.command} --cron); a one-shot run writes its metrics with --metrics-file PATH`)
  }
  if (flags.metricsFile) {
    await seedFromMetricsFile(registry, flags.metricsFile).catch((err: unknown) => {
      o.log(`warning: could not read the previous --metrics-file ${flags.metricsFile} (counters start afresh): ${err instanceof Error ? err.message : String(err)}`)
    })
  }
  let server: Awaited<ReturnType<typeof startMetricsServer>> | null = null
  if (flags.metricsListen) {
    collectDefaultMetrics({ register: registry }) // process_* and nodejs_*: memory, CPU, start time
    server = await startMetricsServer({ listen: flags.metricsListen, registry, ...(o.status ? { status: o.status } : {}), log: o.log })
    o.log(`metrics at ${server.url}/metrics${o.status ? ` and ${server.url}/status` : ''}`)
  }
  const file = flags.metricsFile
  return {
    enabled: Boolean(flags.metricsListen || flags.metricsFile),
    url: server?.url ?? null,
    async afterRun() {
      if (!file) return
      try {
        await writeMetricsFile(registry, file)
      } catch (err) {
        o.log(`warning: could not write --metrics-file ${file}: ${err instanceof Error ? err.message : String(err)}`)
      }
    },
    async close() {
      await server?.close()
    },
  }
}
