/**
 * A sleep that ends early, without throwing, when its signal aborts: what a loop that must stop
 * promptly on SIGTERM waits with (the cron scheduler's jitter, the watch loop's backoff).
 */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted || ms <= 0) return resolve()
    const done = (): void => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}
