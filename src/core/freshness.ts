import { ClockSkewError, StaleError } from './errors.js'

/** The --max-age a replica, `status` and `fleet` use unless told: three missed hourly builds. */
export const DEFAULT_MAX_AGE_SECONDS = 3 * 3600

/**
 * A mirror that keeps serving the same old snapshot looks like "up to date" forever. The pointer
 * carries its signed build time: past the bound, say so with an exit code of its own. A snapshot
 * built "before" its parent was not built long ago: the master's clock went backwards, and its
 * age says nothing; that is said as what it is (same exit code: a monitor's alarm either way).
 */
export function checkFreshness(created: string | null, maxAgeSeconds: number, nowMs: number, parentCreated: string | null = null): void {
  if (created === null || maxAgeSeconds === 0) return
  const age = Math.round((nowMs - Date.parse(created)) / 1000)
  if (age > maxAgeSeconds && parentCreated !== null && Date.parse(created) < Date.parse(parentCreated)) {
    const back = Math.round((Date.parse(parentCreated) - Date.parse(created)) / 1000)
    throw new ClockSkewError(`clock skew on the master: the newest snapshot says it was built ${created}, ${back} s before its parent (${parentCreated}); its age (${age} s) is not a frozen mirror: fix the master's clock (NTP)`)
  }
  if (age > maxAgeSeconds) {
    throw new StaleError(`the newest snapshot the store offers was built ${created} (${age} s ago), older than --max-age ${maxAgeSeconds} s: is the master's build running, or is this mirror frozen?`)
  }
}
