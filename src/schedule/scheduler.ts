import { createTask, validateDetailed, type Logger } from 'node-cron'
import { SnapshotError } from '../core/errors.js'
import { abortableSleep } from './abortable-sleep.js'

/**
 * Runs a "bring it up to date" job on a cron schedule, for `build --cron` and `pull --cron`. Pure of
 * the process: the clock and the trigger are seams (tests drive both); cli/scheduler.ts is the shell
 * that wires it to signals and output.
 *
 * One rule covers every case: each slot of the schedule must be followed by a start of the job at
 * or after it, and never two jobs at once.
 * - At start the job runs at once (the process may have been down for hours).
 * - A slot that comes while the job runs is not run beside it (noOverlap) nor dropped: it is folded
 *   into one follow-up run as soon as the current one ends (the current run may have read the tree
 *   before the changes that slot was meant to pick up). A slot that comes during the jitter wait is
 *   covered by the run about to start.
 * - node-cron does not replay missed slots. It reports the ones its timer noticed it was late for
 *   (a blocked event loop), and we catch those up at once. Its timers run on the monotonic clock,
 *   which stops while the machine sleeps, so after a wake-up its next tick can be far off: a
 *   watchdog compares the wall clock with the slot the schedule owes us, and a slot that is
 *   overdue by more than a grace period counts as missed and is caught up at once.
 * - Only scheduled slots wait for the random jitter; start and catch-up runs go at once.
 */

/** The clock seam: the wall clock and a sleep that ends early (without throwing) when aborted. */
export interface Clock {
  now(): number
  sleep(ms: number, signal: AbortSignal): Promise<void>
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: abortableSleep,
}

/** What a started schedule tells the scheduler, and what the scheduler asks of it. */
export interface TriggerHandlers {
  /** A slot is due now. The promise settles when the run it started (if any) is over. */
  tick(slot: Date): Promise<void>
  /** The schedule noticed, late, that it did not fire for this slot. */
  missed(slot: Date): void
}
export interface Trigger {
  /** The next slot after now, or null if the schedule never fires again. */
  nextRun(): Date | null
  stop(): void
}
export type TriggerFactory = (handlers: TriggerHandlers) => Trigger

/** Checks a cron expression (5 fields, or 6 with seconds first) as node-cron reads it. */
export function checkCronExpression(expression: string): string {
  const v = validateDetailed(expression)
  if (!v.valid) throw new Error(`'${expression}' is not a cron expression: ${v.errors.map((e) => e.message).join('; ')}`)
  return expression
}

/** Checks an IANA time zone name ("UTC", "Europe/Paris"). */
export function checkTimezone(name: string): string {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name })
  } catch {
    throw new Error(`'${name}' is not a time zone (use an IANA name such as UTC or Europe/Paris)`)
  }
  return name
}

/** The production trigger: node-cron, with its own overlap guard on, reporting to our handlers. */
export function cronTrigger(expression: string, timezone: string): TriggerFactory {
  return (h) => {
    const silent: Logger = { info() {}, warn() {}, error() {}, debug() {} } // we log every event ourselves
    const task = createTask(expression, (ctx) => h.tick(ctx.date), { timezone, noOverlap: true, logger: silent, suppressMissedWarning: true })
    task.on('execution:overlap', (ctx) => void h.tick(ctx.date)) // blocked by noOverlap: becomes a follow-up run
    task.on('execution:missed', (ctx) => h.missed(ctx.date))
    void task.start()
    let stopped = false
    return {
      nextRun: () => (stopped ? null : task.getNextRun()),
      stop: () => {
        stopped = true
        void task.destroy()
      },
    }
  }
}

export type RunReason = 'start' | 'scheduled' | 'catch-up'

export interface RunReport {
  reason: RunReason
  /** The slot this run covers (null for the run at start). */
  slot: Date | null
  startedAt: Date
  seconds: number
  ok: boolean
  error?: unknown
  /** 'now' when a follow-up run starts at once; else the schedule's next slot. */
  next: Date | 'now' | null
}

export interface SchedulerOptions {
  job: () => Promise<void>
  cron: string
  timezone?: string
  jitterMs?: number
  clock?: Clock
  random?: () => number
  /** Defaults to node-cron on `cron` and `timezone`. */
  trigger?: TriggerFactory
  /** How often the watchdog compares the wall clock with the schedule. */
  watchdogMs?: number
  /** How late a slot may be before the watchdog counts it as missed. */
  graceMs?: number
  onRun?: (report: RunReport) => void
}

export interface Scheduler {
  /** Stops scheduling, lets a run in progress finish, and resolves once nothing runs. */
  stop(): Promise<void>
  busy(): boolean
}

export function startScheduler(o: SchedulerOptions): Scheduler {
  const clock = o.clock ?? systemClock
  const random = o.random ?? Math.random
  const jitterMs = o.jitterMs ?? 0
  const graceMs = o.graceMs ?? 5_000
  const watchdogMs = o.watchdogMs ?? 10_000
  const stopping = new AbortController()

  let phase: 'idle' | 'waiting' | 'running' = 'idle'
  let lastStart = -Infinity // wall-clock ms at which the latest job started
  let followUp: Date | null = null // a slot that came while the job ran
  let current: Promise<void> | null = null

  const report = (r: RunReport): void => {
    try {
      o.onRun?.(r)
    } catch {
      // a logging failure must not stop the schedule
    }
  }

  const begin = (reason: RunReason, slot: Date | null, delayMs: number): Promise<void> => {
    phase = delayMs > 0 ? 'waiting' : 'running'
    const run = (async () => {
      let why = reason
      let covers = slot
      let delay = delayMs
      for (;;) {
        if (delay > 0) await clock.sleep(delay, stopping.signal)
        if (stopping.signal.aborted) break
        phase = 'running'
        const startedAt = clock.now()
        lastStart = startedAt
        let ok = true
        let error: unknown
        try {
          await o.job()
        } catch (err) {
          ok = false
          error = err
        }
        const again = followUp !== null && !stopping.signal.aborted ? followUp : null
        followUp = null
        report({
          reason: why,
          slot: covers,
          startedAt: new Date(startedAt),
          seconds: (clock.now() - startedAt) / 1000,
          ok,
          ...(ok ? {} : { error }),
          next: again ? 'now' : trigger.nextRun(),
        })
        if (!again) break
        why = 'catch-up'
        covers = again
        delay = 0
      }
      phase = 'idle'
    })()
    current = run
    void run.finally(() => {
      if (current === run) current = null
    })
    return run
  }

  /** A slot is due, by the schedule's tick or because it was missed: make sure a run covers it. */
  const due = (slot: Date, how: 'tick' | 'missed'): Promise<void> => {
    if (stopping.signal.aborted || lastStart >= slot.getTime()) return Promise.resolve()
    if (phase === 'waiting') return Promise.resolve() // the run about to start covers it
    if (phase === 'running') {
      followUp ??= slot
      return Promise.resolve()
    }
    if (how === 'tick') return begin('scheduled', slot, Math.floor(random() * jitterMs))
    return begin('catch-up', slot, 0)
  }

  let expected: number | null = null // the slot the schedule owes us next (wall-clock ms)
  const owe = (): void => {
    expected = trigger.nextRun()?.getTime() ?? null
  }
  const trigger = (o.trigger ?? cronTrigger(o.cron, o.timezone ?? 'UTC'))({
    tick: (slot) => {
      owe()
      return due(slot, 'tick')
    },
    missed: (slot) => {
      owe()
      void due(slot, 'missed')
    },
  })
  owe()

  const watchdog = (async () => {
    while (!stopping.signal.aborted) {
      await clock.sleep(watchdogMs, stopping.signal)
      if (stopping.signal.aborted) break
      if (expected !== null && clock.now() > expected + graceMs) {
        const slot = new Date(expected)
        owe()
        void due(slot, 'missed')
      }
    }
  })()

  void begin('start', null, 0)

  return {
    busy: () => phase !== 'idle',
    async stop() {
      if (!stopping.signal.aborted) {
        stopping.abort()
        trigger.stop()
      }
      await watchdog
      while (current) await current
    },
  }
}

/** A one-line description of a failed run's error, with its code. */
export function describeRunError(err: unknown): string {
  if (err instanceof SnapshotError) return `[${err.code}] ${err.message}`
  const e = err as NodeJS.ErrnoException | undefined
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') return `[ERR_NO_SPACE] the disk is full: ${e.message}`
  if (e instanceof Error) return `${e.code ? `[${e.code}] ` : ''}${e.stack ?? e.message}`
  return String(err)
}

/** One plain line per run: why it ran, when it started, how it ended, and when the next one is. */
export function formatRunReport(r: RunReport): string {
  const what = r.reason === 'start' ? 'first run' : r.reason === 'scheduled' ? 'scheduled run' : `catch-up run (for ${r.slot?.toISOString() ?? '?'})`
  const result = r.ok ? `done in ${r.seconds.toFixed(2)} s` : `failed after ${r.seconds.toFixed(2)} s: ${describeRunError(r.error)}`
  const next = r.next === 'now' ? 'a slot passed meanwhile: running again now' : r.next ? `next run at ${r.next.toISOString()}` : 'no next run'
  return `${what} started ${r.startedAt.toISOString()}: ${result}; ${next}`
}
