import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { LockedError } from '../core/errors.js'
import { tempPathFor } from './durable.js'

/**
 * One holder at a time, whoever starts the job (our scheduler, cron, a person). The lock file
 * names its holder's pid and host; a holder that died (kill -9) leaves a stale lock that the next
 * process recognises and takes over, with no human needed.
 */
export interface HeldLock {
  release(): void
}

export async function acquireLock(path: string, what: string, opts: { waitMs?: number; pollMs?: number } = {}): Promise<HeldLock> {
  const deadline = Date.now() + (opts.waitMs ?? 0)
  for (;;) {
    const held = tryLock(path)
    if (held) return held
    const holder = readHolder(path)
    if (holder && isStale(holder)) {
      takeOverStale(path, holder.raw)
      continue
    }
    if (Date.now() >= deadline) {
      const who = holder ? `process ${holder.pid} on ${holder.host} since ${holder.since}` : 'another process'
      throw new LockedError(`${what} is locked by ${who} (${path}); try again later, or pass --wait SECONDS`)
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 200))
  }
}

function tryLock(path: string): HeldLock | null {
  // The holder's line is written to a private file first and then linked into place: link() fails
  // on an existing name like O_EXCL does, and the lock never exists empty, so a rival can never read
  // a half-written lock, judge it torn and take it over while its holder is still alive.
  const content = holderLine()
  const mine = tempPathFor(path)
  writeFileSync(mine, content, { flag: 'wx', mode: 0o644 })
  try {
    linkSync(mine, path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null
    throw err
  } finally {
    unlinkSync(mine)
  }
  let released = false
  return {
    release() {
      if (released) return
      released = true
      removeIfOurs(path, content)
    },
  }
}

/**
 * Says "this process is at work here" for as long as it runs, in the lock's format, without
 * excluding anyone (isLockHeld reads it; a holder killed with -9 leaves a marker judged stale).
 */
export function announce(path: string): HeldLock {
  const content = holderLine()
  const mine = tempPathFor(path)
  writeFileSync(mine, content, { mode: 0o644 })
  renameSync(mine, path)
  return { release: () => removeIfOurs(path, content) }
}

/** Whether a live process holds the lock at `path` (another host's lock counts as held: never guess). */
export function isLockHeld(path: string): boolean {
  const holder = readHolder(path)
  return holder !== null && !isStale(holder)
}

/** Removes the file only while it still says what we wrote: never a successor's. */
function removeIfOurs(path: string, content: string): void {
  try {
    if (readFileSync(path, 'utf8') === content) unlinkSync(path)
  } catch {
    // already gone: nothing to release
  }
}

/** What a lock (or an announcement) says of its holder: read back by readHolder. */
function holderLine(): string {
  return `${process.pid} ${hostname()} ${new Date().toISOString()}\n`
}

interface Holder {
  pid: number
  host: string
  since: string
  raw: string
}

function readHolder(path: string): Holder | null {
  let raw: string
  try {
    raw = readFileSync(path, 'utf8')
  } catch {
    return null
  }
  const [pid, host, since] = raw.trim().split(' ')
  if (!pid || !/^\d+$/.test(pid)) return { pid: 0, host: host ?? '?', since: since ?? '?', raw } // lost in a crash before it reached the disk
  return { pid: Number(pid), host: host ?? '?', since: since ?? '?', raw }
}

function isStale(h: Holder): boolean {
  if (h.pid === 0) return true
  if (h.host !== hostname()) return false // another machine's lock: never guess
  try {
    process.kill(h.pid, 0)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

/** Moves the stale file aside only if it is still the one we judged, so two takers cannot both win. */
function takeOverStale(path: string, judged: string): void {
  const aside = tempPathFor(path)
  try {
    renameSync(path, aside)
  } catch {
    return
  }
  try {
    if (readFileSync(aside, 'utf8') !== judged) renameSync(aside, path) // someone else's fresh lock: put it back
  } finally {
    try {
      unlinkSync(aside)
    } catch {
      // renamed back
    }
  }
}
