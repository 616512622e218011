import { ExitCode, SnapshotError, StaleError, UsageError } from '../core/errors.js'
import { runWatchLoop, type WatchOutcome } from '../replica/watch-loop.js'
import { WATCH_DEFAULTS, type PullOutcome } from '../replica/watch-policy.js'
import { openProbes } from '../replica/failover-probe.js'
import type { Output } from './output.js'

export interface WatchFlags {
  /** The store, or its mirrors in order: each check asks the first, and the next ones only when it fails. */
  from: string | readonly string[]
  /** Seconds between probes of a host that does not long-poll. */
  interval: number
  /** The long-poll wait asked of `snapshot serve`, in seconds; 0: plain polling. */
  longPoll: number
  /** Cap of the backoff while the store is unreachable or pulls fail, in seconds. */
  maxBackoff: number
  /** Connect timeout, seconds. */
  timeout: number
  token?: string | undefined
  quiet?: boolean
  /** What a new pointer starts, for the log: `pulling` (default), `mirroring`. */
  action?: string
}

/** A failed pull, as the watch policy sees it: its exit code decides retry or wait. */
export function pullOutcomeOf(err: unknown): PullOutcome {
  if (err instanceof StaleError) return { kind: 'ok', stale: true }
  if (err instanceof SnapshotError) return { kind: 'failed', exitCode: err.exitCode, code: err.code, message: err.message }
  const e = err as NodeJS.ErrnoException | undefined
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') return { kind: 'failed', exitCode: ExitCode.NoSpace, code: 'ERR_NO_SPACE', message: `the disk is full: ${e.message}` }
  return { kind: 'failed', exitCode: ExitCode.Failure, code: typeof e?.code === 'string' ? e.code : 'ERR_UNEXPECTED', message: e instanceof Error ? e.message : String(err) }
}

/**
 * `snapshot pull --watch`: runs until SIGINT or SIGTERM, pulling each new publication. A signal
 * while idle (waiting, or in a long-poll) stops at once; during a pull, once it finishes. Resolves,
 * so the process exits 0. `onOutcome` is the watch loop's hook (see watch-loop.ts).
 */
export async function runPullWatch(pullOnce: () => Promise<unknown>, flags: WatchFlags, out: Output, onOutcome?: (o: WatchOutcome) => void): Promise<void> {
  // State changes (unreachable, back, refused) are never silenced: --quiet drops progress only.
  const notice = (line: string): void => {
    if (flags.quiet) process.stderr.write(`snapshot: ${line}\n`)
    else out.log(line)
  }
  const probe = openProbes(typeof flags.from === 'string' ? [flags.from] : flags.from, { ...(flags.token ? { token: flags.token } : {}), timeoutMs: flags.timeout * 1000, waitSeconds: flags.longPoll }, notice)
  const stop = new AbortController()
  let pulling = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stop.signal.aborted) {
      notice(`${signal}: still waiting for the pull in progress to finish (it is crash-safe: kill -9 abandons it)`)
      return
    }
    out.log(`${signal}: stopping${pulling ? ' once the pull in progress finishes' : ''}`)
    stop.abort()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  out.log(
    `watching ${probe.description}: ${flags.longPoll > 0 ? `a long-poll of up to ${flags.longPoll} s where the server holds it (snapshot serve), otherwise ` : ''}a conditional request every ${flags.interval} s`,
  )
  let stopped: Awaited<ReturnType<typeof runWatchLoop>>['stopped'] = null
  try {
    ;({ stopped } = await runWatchLoop({
      probe,
      pull: async () => {
        pulling = true
        out.log(`a new pointer: ${flags.action ?? 'pulling'}`)
        try {
          await pullOnce()
          return { kind: 'ok', stale: false }
        } catch (err) {
          if (err instanceof StaleError) notice(`[${err.code}] ${err.message}`)
          return pullOutcomeOf(err)
        } finally {
          pulling = false
        }
      },
      config: {
        intervalMs: flags.interval * 1000,
        backoffBaseMs: Math.min(WATCH_DEFAULTS.backoffBaseMs, flags.maxBackoff * 1000),
        backoffMaxMs: flags.maxBackoff * 1000,
        minHeldCycleMs: WATCH_DEFAULTS.minHeldCycleMs,
        random: Math.random,
      },
      signal: stop.signal,
      log: notice,
      ...(onOutcome ? { onOutcome } : {}),
    }))
  } finally {
    probe.close()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  if (stopped !== null) throw new UsageError(`the watch stopped: ${stopped.message}`)
  out.log('stopped')
}
