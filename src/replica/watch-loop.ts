/**
 * The I/O shell of `snapshot pull --watch`: probe the pointer, pull when it changed, wait, repeat,
 * as watch-policy.ts decides, until `signal` aborts. Stopping aborts a probe or a wait at once; a
 * pull in progress always finishes (it is atomic, and cutting it would only leave garbage).
 *
 * Observing it (the hook API): `onOutcome` is called synchronously after every probe and every
 * pull with one `WatchOutcome`: what ran, its result, how long it took, the watch's health after
 * it, and what comes next. It is the seam for metrics and a status endpoint (count outcomes by
 * `kind` and `result.kind`, gauge `health`, take `at` of the last `pull` with `ok` as the last
 * success). It must not block; an exception it throws is swallowed, never stopping the watch.
 */
import { abortableSleep } from '../schedule/abortable-sleep.js'
import { afterProbe, afterPull, initialWatchState, type ProbeResult, type PullOutcome, type WatchConfig, type WatchHealth, type WatchState, type WatchStep } from './watch-policy.js'
import type { PointerProbe } from './watch-probe.js'

export type WatchOutcome =
  | { readonly kind: 'probe'; readonly at: Date; readonly ms: number; readonly result: ProbeResult; readonly health: WatchHealth; readonly next: WatchStep }
  | { readonly kind: 'pull'; readonly at: Date; readonly ms: number; readonly result: PullOutcome; readonly health: WatchHealth; readonly next: WatchStep }

/** The clock seam: wall time for `at`, a monotonic ms for durations, a sleep that ends early on abort. */
export interface WatchClock {
  now(): Date
  monotonicMs(): number
  sleep(ms: number, signal: AbortSignal): Promise<void>
}

export const systemWatchClock: WatchClock = {
  now: () => new Date(),
  monotonicMs: () => performance.now(),
  sleep: abortableSleep,
}

export interface WatchLoopOptions {
  readonly probe: PointerProbe
  /** One pull; its failure comes back as an outcome, never as an exception. */
  readonly pull: () => Promise<PullOutcome>
  readonly config: WatchConfig
  /** Aborted: stop after the pull in progress, or at once when idle. */
  readonly signal: AbortSignal
  readonly log: (line: string) => void
  readonly onOutcome?: (outcome: WatchOutcome) => void
  readonly clock?: WatchClock
}

export interface WatchSummary {
  readonly probes: number
  readonly pulls: number
  readonly state: WatchState
  /** Set when the watch ended on a failure that no retry fixes (see watch-policy.ts). */
  readonly stopped: Extract<WatchStep, { kind: 'stop' }> | null
}

export async function runWatchLoop(o: WatchLoopOptions): Promise<WatchSummary> {
  const clock = o.clock ?? systemWatchClock
  const report = (outcome: WatchOutcome): void => {
    try {
      o.onOutcome?.(outcome)
    } catch {
      // an observer's failure must not stop the watch
    }
  }
  let state = initialWatchState()
  let step: WatchStep = { kind: 'probe', afterMs: 0 }
  let probes = 0
  let pulls = 0
  while (!o.signal.aborted) {
    if (step.kind === 'stop') return { probes, pulls, state, stopped: step }
    if (step.kind === 'probe') {
      await clock.sleep(step.afterMs, o.signal)
      if (o.signal.aborted) break
      const at = clock.now()
      const t0 = clock.monotonicMs()
      const result = await o.probe.check(state.handled?.etag ?? null, o.signal)
      if (o.signal.aborted) break // the probe was cut short by the stop: not a failure
      const ms = clock.monotonicMs() - t0
      probes++
      const d = afterProbe(state, result, ms, o.config)
      state = d.state
      step = d.step
      if (d.log !== null) o.log(d.log)
      report({ kind: 'probe', at, ms, result, health: state.health, next: step })
    } else {
      const at = clock.now()
      const t0 = clock.monotonicMs()
      const result = await o.pull() // not abortable on purpose: a pull in progress finishes
      const ms = clock.monotonicMs() - t0
      pulls++
      const d = afterPull(state, result, o.config)
      state = d.state
      step = d.step
      if (d.log !== null) o.log(d.log)
      report({ kind: 'pull', at, ms, result, health: state.health, next: step })
    }
  }
  return { probes, pulls, state, stopped: null }
}
