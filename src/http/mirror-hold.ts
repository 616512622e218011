import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { isLockHeld } from '../fs/lock-file.js'
import { MIRROR_LOCK, MIRROR_WATCH } from '../store/store-layout.js'

/**
 * A relay's server holds a request for a record or an object it lacks while the relay's mirror is
 * copying, until the file lands, instead of answering 404. Its replicas learn of a publication
 * from the origin as soon as the relay does (replica/failover-probe.ts) and ask the relay first:
 * held, they get the hour from next door as soon as the relay has it, and the ocean carries it
 * once; answered 404, each would fetch it from the origin. A file the mirror is not bringing is a
 * 404 when the mirror lets go of its lock, or after `maxMs` (below a replica's 30 s response
 * timeout, so that it turns to the origin rather than time out).
 *
 * A replica may ask before the mirror has started its copy: both heard of the publication at the
 * same moment, and the replica's request is one short hop away. So while a `mirror --watch` runs
 * (its marker names a live process), a request for a missing file waits up to `graceMs` for a copy
 * to begin; none begins: a 404. That grace is what a replica far behind pays per file the relay
 * does not carry, before it turns to the origin.
 */
export class MirrorHold {
  private readonly lock: string
  private readonly watch: string

  constructor(
    root: string,
    private readonly checkMs: number,
    private readonly maxMs: number,
    private readonly graceMs: number,
  ) {
    this.lock = join(root, MIRROR_LOCK)
    this.watch = join(root, MIRROR_WATCH)
  }

  /** Whether a mirror is copying into this store now. */
  private copying(): boolean {
    return isLockHeld(this.lock)
  }

  /** Whether a copy is running, or may begin any moment (a live `mirror --watch`). */
  mayBring(): boolean {
    return this.copying() || isLockHeld(this.watch)
  }

  /**
   * Waits for `file` to exist while a mirror copies, or may start to; true when it does. Ends
   * early when `gone()` says the client left. The lock is read once a check: a few bytes, and only
   * while a request is held.
   */
  async waitFor(file: string, gone: () => boolean): Promise<boolean> {
    const started = performance.now()
    const deadline = started + this.maxMs
    while (!gone() && performance.now() < deadline) {
      if (await exists(file)) return true
      const copying = this.copying()
      if (!copying && performance.now() - started >= this.graceMs) return exists(file) // the copy ended, failed, or never began
      if (!copying && !isLockHeld(this.watch)) return exists(file) // nobody left to bring it
      await new Promise((r) => setTimeout(r, this.checkMs))
    }
    return false
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    (st) => st.isFile(),
    () => false,
  )
}
