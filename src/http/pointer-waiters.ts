import { stat } from 'node:fs/promises'
import type { ServerResponse } from 'node:http'
import { etagFor } from './static-request.js'

export type WakeReason = 'changed' | 'timeout' | 'closed' | 'released'
interface Waiter {
  etag: string
  wake(why: WakeReason): void
}

/**
 * The held long-polls. One timer checks the pointer for all of them (a stat every `checkMs`, only
 * while one is held): the pointer is replaced by rename, so its ETag (inode, size, mtime) changes
 * with each publication. Each waiter also ends on its own deadline, or when its client leaves.
 */
export class PointerWaiters {
  private readonly waiters = new Set<Waiter>()
  private timer: NodeJS.Timeout | undefined
  private checking = false
  released = false

  constructor(
    private readonly file: string,
    private readonly checkMs: number,
  ) {}

  get size(): number {
    return this.waiters.size
  }

  wait(etag: string, ms: number, res: ServerResponse): Promise<WakeReason> {
    return new Promise<WakeReason>((resolve) => {
      const deadline = setTimeout(() => waiter.wake('timeout'), ms)
      const onClose = (): void => waiter.wake('closed')
      const waiter: Waiter = {
        etag,
        wake: (why) => {
          if (!this.waiters.delete(waiter)) return
          clearTimeout(deadline)
          res.off('close', onClose)
          if (this.waiters.size === 0) this.stopTimer()
          resolve(why)
        },
      }
      this.waiters.add(waiter)
      res.once('close', onClose)
      this.timer ??= setInterval(() => void this.check(), this.checkMs)
    })
  }

  /** Answers every held request now, and holds no new one (the server is closing). */
  releaseAll(): void {
    this.released = true
    for (const w of [...this.waiters]) w.wake('released')
  }

  private async check(): Promise<void> {
    if (this.checking) return
    this.checking = true
    try {
      const current = await stat(this.file, { bigint: true }).then(etagFor, () => 'missing')
      for (const w of [...this.waiters]) if (w.etag !== current) w.wake('changed')
    } finally {
      this.checking = false
    }
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}
