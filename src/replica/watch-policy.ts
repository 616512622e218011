/**
 * The decisions of `snapshot pull --watch`, as functions on data: after each probe of the store's
 * pointer and after each pull, what to do next (pull now, or probe again after how long), and
 * whether that deserves a log line. No I/O, no clock: watch-loop.ts does the waiting and the
 * requests, and feeds each result back here.
 *
 * The rules:
 * - A pointer whose publication was dealt with (swapped, or refused) is "handled": the probe sends
 *   its ETag as If-None-Match, so an unchanged pointer costs a 304 without a body.
 * - A refused snapshot (verification, refusal, guard, veto, disk full, objects gone) is handled
 *   too: the watch waits for the next publication instead of fetching the same refusal again, and
 *   consecutive refusals back off, so a store that flips its pointer cannot drive a hot loop.
 * - The origin unreachable (probe errors, pulls failing with exit 4) and other failures (a lock
 *   held by a manual pull, exit 1) are retried with exponential backoff to a cap; the pointer stays
 *   unhandled, so the pull runs as soon as a probe gets through.
 * - A usage error (exit 2: a key file that is gone, a target that is not ours) ends the watch:
 *   no retry fixes a wrong command line, and a service manager shows a process that exited.
 * - A log line only when the state changes (down, back, failing with another reason, no snapshot
 *   yet), never one per try.
 * - A long-poll the server held (it said so in a header) is renewed at once, but never more than
 *   one cycle per `minHeldCycleMs`; a 304 the server did not hold (a static host that ignores the
 *   hint) waits the interval: no hot loop either way.
 */
import { ExitCode } from '../core/errors.js'

/** What identifies one version of the pointer. */
export interface PointerVersion {
  /** sha256 of the pointer's bytes: equal bytes are the same publication, whatever the ETag says. */
  readonly digest: string
  /** The validator to send back as If-None-Match (an HTTP ETag, or a local file's stat), if any. */
  readonly etag: string | null
}

export type ProbeResult =
  /** The pointer differs from the If-None-Match sent (or none was sent). */
  | { readonly kind: 'fresh'; readonly version: PointerVersion }
  /** 304 (or an unchanged stat). `held`: the server honoured the long-poll and waited. */
  | { readonly kind: 'unchanged'; readonly held: boolean }
  /** The store has no pointer yet (404). */
  | { readonly kind: 'absent' }
  | { readonly kind: 'error'; readonly message: string }

export type PullOutcome =
  /** Swapped, staged, up to date or pinned; `stale` when the store's newest snapshot is old (exit 13). */
  | { readonly kind: 'ok'; readonly stale: boolean }
  | { readonly kind: 'failed'; readonly exitCode: number; readonly code: string; readonly message: string }

export type WatchHealth = 'starting' | 'up' | 'empty' | 'down' | 'failing'

export interface WatchState {
  /** The pointer version last dealt with (pulled, or refused); null before the first pull. */
  readonly handled: PointerVersion | null
  /** The version the last probe saw, that a pull is about to deal with. */
  readonly pending: PointerVersion | null
  readonly health: WatchHealth
  /** What the last failure was about, so that the same failure again logs nothing. */
  readonly problem: string | null
  /** Consecutive failed probes or pulls (backoff). */
  readonly failures: number
  /** Consecutive refused publications (their own backoff). */
  readonly refusals: number
}

export interface WatchConfig {
  /** Between probes of a host that does not long-poll, and after an absent pointer. */
  readonly intervalMs: number
  /** First retry delay after a failure; doubles per failure. */
  readonly backoffBaseMs: number
  /** Cap of the failure backoff (and of the refusal backoff, at most). */
  readonly backoffMaxMs: number
  /** A held long-poll is renewed at once, but never sooner than this after the previous one began. */
  readonly minHeldCycleMs: number
  /** In [0, 1): spreads the retries of replicas that lost the origin at the same moment. */
  readonly random: () => number
}

export const WATCH_DEFAULTS = {
  intervalMs: 5_000,
  backoffBaseMs: 1_000,
  backoffMaxMs: 15_000,
  minHeldCycleMs: 1_000,
} as const

export type WatchStep =
  | { readonly kind: 'pull' }
  | { readonly kind: 'probe'; readonly afterMs: number }
  /** A failure no retry can fix (the command line or config is wrong): the watch ends with it. */
  | { readonly kind: 'stop'; readonly exitCode: number; readonly message: string }

export interface WatchDecision {
  readonly state: WatchState
  readonly step: WatchStep
  /** One line for the log when something changed; null when nothing worth saying happened. */
  readonly log: string | null
}

export function initialWatchState(): WatchState {
  return { handled: null, pending: null, health: 'starting', problem: null, failures: 0, refusals: 0 }
}

/** Exit codes that mean "this publication is refused": fetching it again would only refuse it again. */
const REFUSALS: ReadonlySet<number> = new Set([ExitCode.VerifyFailed, ExitCode.NoSpace, ExitCode.Refused, ExitCode.NoSnapshot, ExitCode.GuardTripped, ExitCode.HookVeto])

export function isRefusal(exitCode: number): boolean {
  return REFUSALS.has(exitCode)
}

/** Exponential from the base, capped, with jitter in the upper half (as a download's retries, store/transfer-retry.ts). */
export function backoffMs(attempt: number, config: Pick<WatchConfig, 'backoffBaseMs' | 'backoffMaxMs' | 'random'>): number {
  const ceiling = Math.min(config.backoffMaxMs, config.backoffBaseMs * 2 ** Math.min(30, Math.max(0, attempt - 1)))
  return Math.round(ceiling / 2 + (config.random() * ceiling) / 2)
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`
}

/** The log line for coming back from a bad state, or null when there was none. */
function recovery(state: WatchState): string | null {
  if (state.health === 'down') return 'the store answers again'
  if (state.health === 'failing') return 'recovered'
  return null
}

/** After a probe that took `elapsedMs`. */
export function afterProbe(state: WatchState, result: ProbeResult, elapsedMs: number, config: WatchConfig): WatchDecision {
  switch (result.kind) {
    case 'fresh': {
      const back = state.health === 'down' ? recovery(state) : null
      if (state.handled !== null && result.version.digest === state.handled.digest) {
        // Same bytes under a new validator (a touched file, another CDN edge): nothing to pull,
        // but remember the validator so that the next probes are 304s again.
        const next: WatchState = { ...state, handled: result.version, health: state.health === 'down' ? 'up' : state.health, failures: 0 }
        return { state: next, step: { kind: 'probe', afterMs: config.intervalMs }, log: back }
      }
      const next: WatchState = { ...state, pending: result.version, health: state.health === 'down' || state.health === 'empty' ? 'up' : state.health }
      return { state: next, step: { kind: 'pull' }, log: back }
    }
    case 'unchanged': {
      const back = state.health === 'down' ? recovery(state) : null
      const next: WatchState = { ...state, health: state.health === 'down' ? 'up' : state.health, failures: state.health === 'down' ? 0 : state.failures }
      const afterMs = result.held ? Math.max(0, config.minHeldCycleMs - elapsedMs) : config.intervalMs
      return { state: next, step: { kind: 'probe', afterMs }, log: back }
    }
    case 'absent': {
      const log = state.health === 'empty' ? null : `the store has no snapshot yet; checking every ${seconds(config.intervalMs)}`
      return { state: { ...state, health: 'empty', problem: null, failures: 0 }, step: { kind: 'probe', afterMs: config.intervalMs }, log }
    }
    case 'error': {
      const failures = state.failures + 1
      const afterMs = backoffMs(failures, config)
      const log = state.health === 'down' ? null : `the store is unreachable (${result.message}); retrying with backoff up to ${seconds(config.backoffMaxMs)}, and saying so when it answers again`
      return { state: { ...state, health: 'down', problem: 'unreachable', failures }, step: { kind: 'probe', afterMs }, log }
    }
  }
}

/** After a pull that the probe's `pending` version started. */
export function afterPull(state: WatchState, outcome: PullOutcome, config: WatchConfig): WatchDecision {
  if (outcome.kind === 'ok') {
    const log = recovery(state)
    const next: WatchState = { ...state, handled: state.pending ?? state.handled, pending: null, health: 'up', problem: null, failures: 0, refusals: 0 }
    // Probe at once: a publication made while the pull ran is picked up without waiting.
    return { state: next, step: { kind: 'probe', afterMs: 0 }, log }
  }
  if (outcome.exitCode === ExitCode.Usage) {
    const message = `[${outcome.code}] ${outcome.message}`
    return { state: { ...state, pending: null, health: 'failing', problem: 'usage' }, step: { kind: 'stop', exitCode: outcome.exitCode, message }, log: `${message}: stopping the watch (fix the command line or the config; retrying cannot)` }
  }
  if (isRefusal(outcome.exitCode)) {
    const refusals = state.refusals + 1
    const afterMs = Math.max(config.intervalMs, backoffMs(refusals, config))
    const next: WatchState = { ...state, handled: state.pending ?? state.handled, pending: null, health: 'up', problem: null, failures: 0, refusals }
    return { state: next, step: { kind: 'probe', afterMs }, log: `[${outcome.code}] refused: ${outcome.message}; not retrying it: waiting for the next publication` }
  }
  const failures = state.failures + 1
  const afterMs = backoffMs(failures, config)
  if (outcome.exitCode === ExitCode.Network) {
    const log = state.health === 'down' ? null : `the store is unreachable during a pull ([${outcome.code}] ${outcome.message}); retrying with backoff up to ${seconds(config.backoffMaxMs)}`
    return { state: { ...state, pending: null, health: 'down', problem: 'unreachable', failures }, step: { kind: 'probe', afterMs }, log }
  }
  const problem = `${outcome.exitCode} ${outcome.code}`
  const log = state.health === 'failing' && state.problem === problem ? null : `pull failed ([${outcome.code}] ${outcome.message}); retrying with backoff up to ${seconds(config.backoffMaxMs)}, and saying so when it succeeds`
  return { state: { ...state, pending: null, health: 'failing', problem, failures }, step: { kind: 'probe', afterMs }, log }
}
