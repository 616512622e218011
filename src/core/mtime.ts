/**
 * Modification times, as snapshots carry them: the text `SECONDS.NNNNNNNNN` (nine digits of
 * nanoseconds), GNU find's `%T@` without its tenth digit. Text, because nanoseconds since 1970
 * do not fit a JS number; before 1970 the seconds are the floor and the nanoseconds count up
 * from it (-0.5 s is `-1.500000000`), as find prints them.
 *
 * Node sets times through libuv, which keeps microseconds and drops the rest (uv__fs_to_timespec).
 * So the master publishes times to the microsecond (the last three digits are 0): what a replica
 * can set, it sets exactly, a tree rebuilt from the archives (fleet rollback) scans to the same
 * times and the same tree digest, and the format keeps room for nanoseconds.
 */
export type Mtime = string

const MTIME = /^-?[0-9]{1,12}\.[0-9]{9}$/

export function isMtime(v: unknown): v is Mtime {
  return typeof v === 'string' && MTIME.test(v)
}

/** The time of a stat's nanoseconds, to the microsecond (the module comment says why). */
export function mtimeFromNs(ns: bigint): Mtime {
  let sec = ns / 1_000_000_000n
  let frac = ns % 1_000_000_000n
  if (frac < 0n) {
    sec -= 1n
    frac += 1_000_000_000n
  }
  return `${sec}.${(frac / 1000n).toString().padStart(6, '0')}000`
}

/** find's `%T@` text (ten fractional digits) as a carried time, to the microsecond. */
export function mtimeFromFindText(t: string): Mtime {
  const dot = t.indexOf('.')
  return `${t.slice(0, dot + 7)}000`
}

/** The time in whole microseconds: what survives a trip through Node's utimes. */
export function mtimeMicros(m: Mtime): bigint {
  const dot = m.indexOf('.')
  return BigInt(m.slice(0, dot)) * 1_000_000n + BigInt(m.slice(dot + 1, dot + 7))
}

/** The seconds that make libuv set exactly this time's microseconds (tar's header takes the floor). */
export function mtimeSeconds(m: Mtime): number {
  const dot = m.indexOf('.')
  return Number(m.slice(0, dot))
}

/**
 * The number to hand to fs.utimes/futimes/lutimes for this time. libuv takes the fraction of a
 * double and truncates it to microseconds; a double near 1.8e9 s is only exact to ~240 ns, so
 * aiming half a microsecond above lands inside the right microsecond, never one below it.
 */
export function utimesValue(m: Mtime): number {
  const dot = m.indexOf('.')
  return Number(m.slice(0, dot)) + (Number(m.slice(dot + 1, dot + 7)) + 0.5) / 1e6
}
