/**
 * `pull --limit-rate RATE`: a cap on the bytes a pull downloads per second, so that a replica
 * leaves the rest of its link to its own users (rsync --bwlimit, curl --limit-rate).
 *
 * A token bucket: it refills at the rate, holds at most the burst, and starts full. Bytes are
 * counted once they have arrived: a chunk may take the bucket below zero, and the reader then
 * waits until the debt is paid before reading on. Not reading is what slows the sender: TCP's
 * flow control closes the window, so the link itself carries no more than the cap (plus the
 * burst and what the kernel buffers). One bucket serves the whole pull: every object, every
 * retry and resume, concurrent downloads alike.
 *
 * `TokenBucket` is pure arithmetic on an injected clock; `RateLimiter` adds the waiting, and any
 * source can use it: `consume(n)` after reading n bytes, or `throttle(body)` around a body stream.
 */
import { setTimeout as sleep } from 'node:timers/promises'

/** Below this a 64 KiB socket read means a pause of over 4 s, long enough for servers to drop us. */
export const MIN_RATE = 16 * 1024
const MAX_RATE = 2 ** 40 // 1 TiB/s: beyond any link, and safe in a double's integer range
/** The burst: a tenth of a second's worth, and never less than one socket read. */
const BURST_SECONDS = 0.1
const MIN_BURST = 64 * 1024

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }

/**
 * `500k`, `10M`, `1.5M`, `2097152`: bytes per second, with binary suffixes k, M, G (any case),
 * as curl and wget read them: 1k = 1024 bytes/s, 1M = 1,048,576. Throws a plain Error that says
 * what is wrong (the CLI makes it a usage error).
 */
export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?|\.\d+)([kmg]?)$/i.exec(text.trim())
  if (!m) throw new Error(`'${text}' is not a rate: give bytes per second, as 500k, 10M, 1.5M or 2097152 (k, M, G: 1024, 1024², 1024³)`)
  const rate = Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!)
  if (rate < MIN_RATE) throw new Error(`'${text}' is ${rate} bytes/s: the lowest rate is 16k (${MIN_RATE} bytes/s)`)
  if (rate > MAX_RATE) throw new Error(`'${text}' is above 1024G bytes/s`)
  return rate
}

/** The burst that goes with a rate (see BURST_SECONDS). */
export function defaultBurst(bytesPerSecond: number): number {
  return Math.max(MIN_BURST, Math.round(bytesPerSecond * BURST_SECONDS))
}

export class TokenBucket {
  private tokens: number
  private last: number

  /** `now` in milliseconds, from any monotonic clock. */
  constructor(
    readonly bytesPerSecond: number,
    readonly burstBytes: number,
    private readonly now: () => number,
  ) {
    if (!(bytesPerSecond > 0) || !(burstBytes >= 0)) throw new RangeError(`a token bucket needs a positive rate and a burst >= 0 (got ${bytesPerSecond}, ${burstBytes})`)
    this.tokens = burstBytes
    this.last = now()
  }

  /** Counts n bytes that arrived; returns how many ms to wait before reading more (0: none). */
  take(n: number): number {
    const t = this.now()
    this.tokens = Math.min(this.burstBytes, this.tokens + (Math.max(0, t - this.last) * this.bytesPerSecond) / 1000)
    this.last = Math.max(this.last, t)
    this.tokens -= n
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.bytesPerSecond
  }
}

export interface Clock {
  now(): number
  sleep(ms: number, signal?: AbortSignal): Promise<void>
}

const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) => sleep(ms, undefined, signal ? { signal } : {}),
}

export class RateLimiter {
  readonly bucket: TokenBucket

  constructor(
    bytesPerSecond: number,
    burstBytes = defaultBurst(bytesPerSecond),
    private readonly clock: Clock = realClock,
  ) {
    this.bucket = new TokenBucket(bytesPerSecond, burstBytes, () => clock.now())
  }

  /** Call after reading n bytes: resolves once reading more keeps within the rate. */
  async consume(n: number, signal?: AbortSignal): Promise<void> {
    const ms = this.bucket.take(n)
    if (ms > 0) await this.clock.sleep(Math.ceil(ms), signal)
  }

  /** A body stream, read no faster than the rate (for a source that hands its body on as is). */
  async *throttle<T extends Uint8Array>(body: AsyncIterable<T>, signal?: AbortSignal): AsyncGenerator<T> {
    for await (const chunk of body) {
      await this.consume(chunk.length, signal)
      yield chunk
    }
  }
}
