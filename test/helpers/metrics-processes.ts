import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { BIN } from './cli.js'
export { freePort } from './free-port.js'
import { freePort } from './free-port.js'

/** A long-running `snapshot ...` (pull --cron, build --cron) with --metrics-listen on 127.0.0.1, port 0. */
export interface MetricsProcess {
  /** e.g. http://127.0.0.1:PORT (serves /metrics, and /status on a replica) */
  readonly url: string
  readonly child: ChildProcess
  stderr(): string
  /** SIGTERM, then wait for the exit (bounded); resolves with the exit code. */
  stop(): Promise<number | null>
}

export async function startMetricsProcess(args: string[], timeoutMs = 20_000): Promise<MetricsProcess> {
  const child = spawn(process.execPath, [BIN, ...args, '--metrics-listen', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`snapshot ${args.join(' ')} did not say where its metrics are within ${timeoutMs} ms:\n${stderr}`))
    }, timeoutMs)
    createInterface({ input: child.stderr! }).on('line', (line) => {
      stderr += line + '\n'
      const m = /metrics at (http:\/\/\S+)\/metrics/.exec(line)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`snapshot ${args.join(' ')} exited ${code}:\n${stderr}`))
    })
  })
  return {
    url,
    child,
    stderr: () => stderr,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode)
        const kill = setTimeout(() => child.kill('SIGKILL'), 15_000)
        child.once('exit', (code) => {
          clearTimeout(kill)
          resolve(code)
        })
        child.kill('SIGTERM')
      }),
  }
}

/** Polls `probe` until it returns a value other than undefined, at most `timeoutMs`. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000, stepMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    try {
      const v = await probe()
      if (v !== undefined) return v
    } catch (err) {
      last = err
    }
    await new Promise((r) => setTimeout(r, stepMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`)
}

export async function getText(url: string): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) })
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') }
}


/** A long-running external server (Prometheus, node_exporter), killed on stop. */
export function startExternal(cmd: string, args: string[]): { child: ChildProcess; output(): string; stop(): Promise<void> } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()))
  child.once('error', (err) => (output += `spawn error: ${err.message}\n`))
  return {
    child,
    output: () => output,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return resolve()
        const kill = setTimeout(() => child.kill('SIGKILL'), 10_000)
        child.once('exit', () => {
          clearTimeout(kill)
          resolve()
        })
        child.kill('SIGTERM')
      }),
  }
}

/** Fails with what to do when a tool the test needs is missing (never a silent skip). */
export function requireTool(cmd: string): void {
  const r = spawnSyncQuiet('sh', ['-c', `command -v ${cmd}`])
  if (r !== 0) throw new Error(`${cmd} is not installed: run scripts/test-deps.sh (as root) to install what the tests need`)
}

function spawnSyncQuiet(cmd: string, args: string[]): number | null {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status
}
