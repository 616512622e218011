import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { UsageError } from '../src/core/errors.js'
import { generateCorpus } from './corpus.js'

/**
 * What the WAN benchmarks (wan-bench.ts, wan-relays.ts) run their processes with: the master's
 * side prepared (corpus, key, a timed build), and processes that live through the run (their
 * lines watched, all killed at the end).
 */

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
export const bin = join(repo, 'bin/snapshot')
export const proxyScript = join(repo, 'dist/scripts/wan-latency-proxy.js')

/**
 * The master's side of a WAN run: a work directory (new or empty), a corpus of `files`, a key,
 * and the build of one snapshot (timed to its end).
 */
export async function prepareMaster(workDir: string | undefined, files: number, seed: string, log: (line: string) => void) {
  const work = workDir ?? (await mkdtemp(join(tmpdir(), `snapshot-${seed}-`)))
  await mkdir(work, { recursive: true })
  if ((await readdir(work)).length > 0) throw new UsageError(`--work ${work} is not empty: give a new or empty directory`)
  const master = join(work, 'master')
  const tree = join(master, 'tree')
  const store = join(master, 'store')
  const keys = join(master, 'keys')
  await mkdir(master, { recursive: true })
  log(`corpus: ${files} files`)
  await generateCorpus({ files, out: tree, seed })
  await runToEnd([process.execPath, bin, 'keygen', '--out', keys, '--quiet'], 'keygen')
  const build = async (): Promise<{ id: number; seconds: number; endedAtMs: number }> => {
    const r = await runToEnd([process.execPath, bin, 'build', '--source', tree, '--store', store, '--key', join(keys, 'snapshot.key'), '--json', '--quiet'], 'snapshot build')
    return { id: (JSON.parse(r.stdout) as { id: number }).id, seconds: r.seconds, endedAtMs: r.endedAtMs }
  }
  return { work, master, tree, store, keys, build }
}

export interface LineProcess {
  child: ChildProcess
  lines: string[]
  /** When each stdout line arrived (epoch ms). */
  lineTimes: number[]
  /** Arrival times (epoch ms) of the stderr lines that say a pull starts. */
  pullStarts: number[]
  /** Arrival times (epoch ms) of the stderr lines that say a pull has a step's objects and applies it. */
  applyStarts: number[]
  /** Resolves with the first line from `from` on that matches. */
  waitFor(match: (line: string) => boolean, what: string, timeoutMs: number, from?: number): Promise<string>
}

const running = new Set<ChildProcess>()

export function startProcess(argv: string[], what: string, stderrTo?: string[], stdin: 'pipe' | 'ignore' = 'ignore'): LineProcess {
  // Only where asked: Node's stdin pipe is a socket, and rsync --daemon reads a socket on stdin as inetd mode.
  const child = spawn(argv[0]!, argv.slice(1), { stdio: [stdin, 'pipe', 'pipe'] })
  running.add(child)
  child.once('exit', () => running.delete(child))
  const lines: string[] = []
  const lineTimes: number[] = []
  const pullStarts: number[] = []
  const applyStarts: number[] = []
  const wakers = new Set<() => void>()
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l)
    lineTimes.push(Date.now())
    for (const w of [...wakers]) w()
  })
  const errLines = stderrTo ?? []
  createInterface({ input: child.stderr! }).on('line', (l) => {
    if (l.endsWith('a new pointer: pulling')) pullStarts.push(Date.now())
    if (/: applying (delta|full) of snapshot \d+:/.test(l)) applyStarts.push(Date.now())
    if (errLines.length < 10_000) errLines.push(process.env.WAN_DEBUG ? `${new Date().toISOString().slice(11, 23)} ${l}` : l)
  })
  return {
    child,
    lines,
    lineTimes,
    pullStarts,
    applyStarts,
    waitFor(match, desc, timeoutMs, from = 0) {
      return new Promise((resolvePromise, reject) => {
        const check = (): void => {
          const hit = lines.slice(from).find(match)
          if (hit !== undefined) {
            finish()
            resolvePromise(hit)
          }
        }
        const onExit = (code: number | null): void => {
          finish()
          reject(new Error(`${what} exited (${code}) while waiting for ${desc}: ${errLines.slice(-5).join(' | ')}`))
        }
        const timer = setTimeout(() => {
          finish()
          reject(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${desc} from ${what}: ${errLines.slice(-5).join(' | ')}`))
        }, timeoutMs)
        const finish = (): void => {
          clearTimeout(timer)
          wakers.delete(check)
          child.off('exit', onExit)
        }
        wakers.add(check)
        child.once('exit', onExit)
        check()
      })
    },
  }
}

export function runToEnd(argv: string[], what: string): Promise<{ seconds: number; endedAtMs: number; stdout: string }> {
  const started = performance.now()
  return new Promise((resolvePromise, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 8192) stderr += d.toString()
    })
    child.once('error', reject)
    child.once('close', (code) => {
      running.delete(child)
      const endedAtMs = Date.now()
      if (code === 0) resolvePromise({ seconds: (performance.now() - started) / 1000, endedAtMs, stdout })
      else reject(new Error(`${what} failed with exit code ${code}: ${stderr.trim().slice(-2000)}`))
    })
  })
}

export function stopAll(): void {
  for (const child of running) child.kill('SIGKILL')
  running.clear()
}
