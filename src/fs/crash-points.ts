/**
 * Test instrumentation, never used in production: with SNAPSHOT_CRASH_AT=NAME (or NAME#N, the
 * N-th time that point is reached) the process kills itself with SIGKILL at crashPoint(NAME), as
 * a power cut or `kill -9` would, so the crash-safety tests can stop a build or a pull at an exact
 * step. Without the variable every call is one comparison. The variable is read once, at load.
 */
const spec = parseSpec(process.env.SNAPSHOT_CRASH_AT)
let reached = 0

function parseSpec(value: string | undefined): { name: string; nth: number } | null {
  if (!value) return null
  const m = /^(.*)#(\d+)$/.exec(value)
  return m ? { name: m[1]!, nth: Number(m[2]) } : { name: value, nth: 1 }
}

export function crashPoint(name: string): void {
  if (spec === null || name !== spec.name) return
  if (++reached === spec.nth) process.kill(process.pid, 'SIGKILL')
}
