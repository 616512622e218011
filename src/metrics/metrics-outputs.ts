import { collectDefaultMetrics, type Registry } from 'prom-client'
import { UsageError } from '../core/errors.js'
import type { ListenAddress } from './listen-address.js'
import { seedFromMetricsFile, writeMetricsFile } from './metrics-file.js'
import { startMetricsServer } from './metrics-server.js'

/** The two flags every instrumented command shares. */
export interface MetricsFlags {
  /** Serve `/metrics` (and `/status` on a replica) here; long-running processes only. */
  readonly metricsListen?: ListenAddress
  /** Write the metrics to this file after each run (node_exporter's textfile collector). */
  readonly metricsFile?: string
}

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

/**
 * Times a job and hands its outcome to `record`, then rethrows its error. The job keeps its result
 * with `keep` as soon as it has one, so that a run that produced a result and then failed (a pull
 * that found the store stale: exit 13) is recorded with both.
 */
export async function observed<T>(
  job: (keep: (result: T) => void) => Promise<void>,
  record: (outcome: { result: T | null; error: unknown }, seconds: number) => Promise<void> | void,
  log: (l: string) => void,
): Promise<void> {
  const started = process.hrtime.bigint()
  let result: T | null = null
  let error: unknown = null
  try {
    await job((r) => (result = r))
  } catch (err) {
    error = err
    throw err
  } finally {
    try {
      await record({ result, error }, Number(process.hrtime.bigint() - started) / 1e9)
    } catch (err) {
      log(`warning: could not record metrics: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
}
