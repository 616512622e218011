import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { BIN } from './cli.js'

/**
 * A long-running CLI process (`snapshot serve`, `snapshot pull --watch`) whose output lines the
 * test reads as they come, in order, with stdout and stderr interleaved as they arrived.
 */
export interface Lines {
  readonly child: ChildProcess
  /** Every line so far: `out: ...` from stdout, `err: ...` from stderr. */
  readonly lines: string[]
  /** Resolves with the first line (from index `from`) that matches, or rejects after timeoutMs. */
  waitFor(match: (line: string) => boolean, what: string, timeoutMs?: number, from?: number): Promise<string>
  /** SIGTERM (or the given signal); resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
  exited(): Promise<number | null>
}

export function startLines(args: string[], env: NodeJS.ProcessEnv = {}): Lines {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  const listeners = new Set<() => void>()
  const push = (prefix: string) => (line: string) => {
    lines.push(`${prefix}${line}`)
    for (const l of [...listeners]) l()
  }
  createInterface({ input: child.stdout! }).on('line', push('out: '))
  createInterface({ input: child.stderr! }).on('line', push('err: '))
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return {
    child,
    lines,
    waitFor(match, what, timeoutMs = 30_000, from = 0) {
      return new Promise<string>((resolve, reject) => {
        const check = (): boolean => {
          const hit = lines.slice(from).find(match)
          if (hit === undefined) return false
          done()
          resolve(hit)
          return true
        }
        const timer = setTimeout(() => {
          done()
          reject(new Error(`timed out waiting for ${what}; output so far:\n${lines.join('\n')}`))
        }, timeoutMs)
        const onExit = (): void => {
          if (check()) return
          done()
          reject(new Error(`the process exited while waiting for ${what}; output:\n${lines.join('\n')}`))
        }
        const done = (): void => {
          clearTimeout(timer)
          listeners.delete(listener)
          child.off('exit', onExit)
        }
        const listener = (): void => void check()
        listeners.add(listener)
        child.once('exit', onExit)
        check()
      })
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exit
    },
    exited: () => exit,
  }
}

/** `snapshot serve` with its request log on, on 127.0.0.1 (port 0 unless given). */
export async function startLoggedServe(store: string, port = 0): Promise<Lines & { url: string; port: number }> {
  const p = startLines(['serve', '--store', store, '--host', '127.0.0.1', '--port', String(port), '--json'])
  const line = await p.waitFor((l) => l.startsWith('out: {'), 'serve to listen', 15_000)
  const { url, port: actual } = JSON.parse(line.slice(5)) as { url: string; port: number }
  return Object.assign(p, { url, port: actual })
}

/** The JSON results a `pull --watch --json` printed so far. */
export function pullResults(lines: readonly string[]): { action: string; id: number; swappedAtMs: number | null }[] {
  return lines.filter((l) => l.startsWith('out: {')).map((l) => JSON.parse(l.slice(5)) as { action: string; id: number; swappedAtMs: number | null })
}
