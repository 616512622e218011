import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { isLockHeld } from '../fs/lock-file.js'
import { MIRROR_LOCK } from '../store/store-layout.js'

/**
 * A relay's server holds a request for a record or an object it lacks while the relay's mirror is
 * copying, until the file lands, instead of answering 404. Its replicas learn of a publication
 * from the origin as soon as the relay does (replica/failover-probe.ts) and ask the relay first:
 * held, they get the hour from next door as soon as the relay has it, and the ocean carries it
 * once; answered 404, each would fetch it from the origin. A file the mirror is not bringing is a
 * 404 when the mirror lets go of its lock, or after `maxMs` (below a replica's 30 s response
 * timeout, so that it turns to the origin rather than time out).
 */
export class MirrorHold {
  private readonly lock: string

  constructor(
    root: string,
    private readonly checkMs: number,
    private readonly maxMs: number,
  ) {
    this.lock = join(root, MIRROR_LOCK)
  }

  /** Whether a mirror is copying into this store now. */
  copying(): boolean {
    return isLockHeld(this.lock)
  }

  /**
   * Waits for `file` to exist while a mirror copies; true when it does. Ends early when `gone()`
   * says the client left. The lock is read once a check: a few bytes, and only while held.
   */
  async waitFor(file: string, gone: () => boolean): Promise<boolean> {
    const deadline = performance.now() + this.maxMs
    while (!gone() && performance.now() < deadline) {
      if (await exists(file)) return true
      if (!this.copying()) return exists(file) // the copy ended between the two checks, or failed
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
