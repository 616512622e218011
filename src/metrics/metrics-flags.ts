import type { ListenAddress } from './listen-address.js'

/**
 * What the instrumented commands share before any metric exists: the flags, whether they ask for
 * metrics at all (without them prom-client is never loaded: ~100 modules and ~12 MiB that a build
 * or a pull from cron does not need), and the timing of a job with its outcome.
 */
/** The two flags every instrumented command shares. */
export interface MetricsFlags {
  /** Serve `/metrics` (and `/status` on a replica) here; long-running processes only. */
  readonly metricsListen?: ListenAddress
  /** Write the metrics to this file after each run (node_exporter's textfile collector). */
  readonly metricsFile?: string
}

/** Whether any metrics output is asked for. */
export function metricsWanted(flags: MetricsFlags): boolean {
  return Boolean(flags.metricsListen || flags.metricsFile)
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
