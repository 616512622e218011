import { startScheduler, formatRunReport } from '../schedule/scheduler.js'
import type { Output } from './output.js'

export interface ScheduleFlags {
  cron: string
  timezone?: string
  jitter?: number
  quiet?: boolean
}

/**
 * The CLI shell around startScheduler: runs `job` on the schedule until SIGINT or SIGTERM, then
 * lets a run in progress finish (builds and pulls are atomic, and killing them midway only leaves
 * garbage for the next run to clear) and resolves, so the process exits 0.
 */
export async function runOnSchedule(job: () => Promise<void>, flags: ScheduleFlags, out: Output): Promise<void> {
  const timezone = flags.timezone ?? 'UTC'
  const jitter = flags.jitter ?? 0
  const failure = (line: string): void => {
    if (flags.quiet) process.stderr.write(`snapshot: ${line}\n`) // failures are never silenced
    else out.log(line)
  }
  out.log(`schedule '${flags.cron}' (${timezone})${jitter > 0 ? `, a random delay of up to ${jitter} s before each scheduled run` : ''}; running once now to catch up`)
  const scheduler = startScheduler({
    job,
    cron: flags.cron,
    timezone,
    jitterMs: jitter * 1000,
    onRun: (r) => (r.ok ? out.log(formatRunReport(r)) : failure(formatRunReport(r))),
  })
  await new Promise<void>((resolve) => {
    let stopping = false
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        failure(`${signal}: still waiting for the run in progress to finish (it is crash-safe: kill -9 abandons it)`)
        return
      }
      stopping = true
      out.log(`${signal}: stopping${scheduler.busy() ? ' once the run in progress finishes' : ''}`)
      void scheduler.stop().then(() => {
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
        out.log('stopped')
        resolve()
      })
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
}
