import { spawn } from 'node:child_process'

/**
 * Operator commands around a swap: a pre-swap health check that can veto it (say, a script that
 * checks the staged tree), and a post-swap command (say, reloading the web server). They run in
 * `sh -c`, with SNAPSHOT_ID, SNAPSHOT_TREE (the tree going live) and SNAPSHOT_TARGET in their
 * environment, and are killed after `timeoutMs`.
 */
export interface HookResult {
  readonly ok: boolean
  readonly code: number | null
  readonly output: string
}

export function runHook(command: string, env: Record<string, string>, timeoutMs: number): Promise<HookResult> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', command], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    const keep = (d: Buffer): void => {
      if (output.length < 4096) output += d.toString()
    }
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    const timer = setTimeout(() => {
      output += `\n(killed after ${Math.round(timeoutMs / 1000)} s)`
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      resolve({ ok: false, code: null, output: err.message })
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ ok: code === 0, code, output: output.trim() })
    })
  })
}
