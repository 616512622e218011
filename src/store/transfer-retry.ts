/**
 * The retry loop of a download, and the stall watchdog that feeds it. Hand-written rather than
 * got's own `retry` and `timeout.socket`, because those cannot keep what this loop keeps:
 * - exact resume: each attempt reopens the part file, hashes again what is on disk and asks for
 *   `Range: bytes=N-` from its size; got's stream retry only hands over a fresh request (the
 *   `retry` event) and leaves the Range, the 206/Content-Range check and the re-hash to the
 *   caller, so the loop would be written again around it;
 * - statuses are judged by us (`throwHttpErrors: false`: a 416 restarts the part, 404 is
 *   "missing", 408/429/5xx are retried with Retry-After), and got retries statuses only when it
 *   throws them;
 * - a stall is no bytes from the server: `timeout.socket` also fires while we do not read (a slow
 *   disk, or `--limit-rate` holding the reader back, which closes the TCP window), and
 *   `timeout.read` bounds the whole body, not the silence. The watchdog is stopped around our own
 *   waits.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { NetworkError, SnapshotError } from '../core/errors.js'

/** Retries after the first attempt, and the first backoff, unless the caller says (`--retries`). */
export const DEFAULT_RETRIES = 5
export const DEFAULT_RETRY_BASE_MS = 500
const RETRY_CAP_MS = 10_000

/**
 * Backoff before retry number `attempt` (1-based): exponential from `baseMs`, capped, with
 * jitter in the upper half so that ten replicas knocked off at once do not return in step.
 */
export function retryDelayMs(attempt: number, baseMs: number, capMs = RETRY_CAP_MS, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(ceiling / 2 + (random() * ceiling) / 2)
}

/** A failure worth another attempt; what is on disk is kept for the resume. */
export class TransientError extends Error {
  constructor(
    message: string,
    options: { cause?: unknown; retryAfterMs?: number | undefined; restart?: boolean } = {},
  ) {
    super(message, { cause: options.cause })
    this.retryAfterMs = options.retryAfterMs
    this.restart = options.restart ?? false
  }
  readonly retryAfterMs: number | undefined
  /** Throw away the partial file before the next attempt. */
  readonly restart: boolean
}

/**
 * Runs `attempt` until it succeeds, throws anything but a TransientError, or has been retried
 * `retries` times; the wait between grows (retryDelayMs) and honours Retry-After up to the cap.
 */
export async function withRetries<T>(attempt: () => Promise<T>, opts: { retries: number; baseMs: number; signal: AbortSignal | undefined; what: string }): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt()
    } catch (err) {
      if (!(err instanceof TransientError)) throw err
      if (n > opts.retries) {
        if (err.cause instanceof SnapshotError) throw err.cause
        throw new NetworkError(`${opts.what}: ${err.message} (gave up after ${n} attempt${n === 1 ? '' : 's'})`, { cause: err.cause ?? err })
      }
      const delay = Math.min(RETRY_CAP_MS, Math.max(retryDelayMs(n, opts.baseMs), err.retryAfterMs ?? 0))
      await sleep(delay, undefined, opts.signal ? { signal: opts.signal } : {}).catch(() => {
        throw opts.signal?.reason
      })
    }
  }
}

/** Aborts a request when no bytes arrive for `ms` (got's timeouts only cover getting headers). */
export class StallWatchdog {
  fired = false
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly ms: number,
    private readonly onStall: () => void,
  ) {
    this.arm()
  }

  arm(): void {
    this.stop()
    this.timer = setTimeout(() => {
      this.fired = true
      this.onStall()
    }, this.ms)
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
  }
}
