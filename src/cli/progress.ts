/**
 * Progress of long work. On a terminal: one line redrawn in place (a bar, counts, bytes, rate,
 * ETA), at most ten times a second. Otherwise (logs, cron mail): a plain line every few seconds,
 * so a log shows the job is alive without drowning in it.
 */
export type ProgressFn = (phase: string, done: number, total: number, bytes: number) => void

export function makeProgress(opts: { enabled: boolean; stream?: NodeJS.WriteStream; now?: () => number }): ProgressFn {
  const stream = opts.stream ?? process.stderr
  const now = opts.now ?? Date.now
  if (!opts.enabled) return () => undefined
  const tty = stream.isTTY === true
  let phase = ''
  let started = 0
  let last = 0
  return (p, done, total, bytes) => {
    const t = now()
    if (p !== phase) {
      if (tty && phase) stream.write('\n')
      phase = p
      started = t
      last = 0
    }
    const finished = total > 0 && done >= total
    if (!finished && t - last < (tty ? 100 : 5000)) return
    last = t
    const secs = Math.max((t - started) / 1000, 0.001)
    const rate = done / secs
    const eta = total > done && rate > 0 ? Math.round((total - done) / rate) : 0
    const pct = total > 0 ? Math.min(100, Math.floor((100 * done) / total)) : 0
    const counts = `${done.toLocaleString('en-US')}/${total.toLocaleString('en-US')} entries, ${(bytes / 1e6).toFixed(1)} MB, ${Math.round(rate).toLocaleString('en-US')}/s`
    if (tty) {
      const width = 24
      const filled = Math.round((pct / 100) * width)
      stream.write(`\r${phase} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(pct).padStart(3)}% ${counts}${finished ? '' : `, ETA ${eta} s`}\x1b[K`)
      if (finished) {
        stream.write('\n')
        phase = ''
      }
    } else {
      stream.write(`snapshot: ${phase}: ${pct}% (${counts})\n`)
    }
  }
}
