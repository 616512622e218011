/**
 * Measuring helpers shared by the benchmarks: wall time and peak memory of a process tree, tree
 * sizes and comparisons, page-cache control, tool installation, and the results table.
 *
 * How peak RSS is measured (measureCommand). A figure for a pipeline such as `tar c | zstd` or for
 * ten rsyncs at once must cover every process of the tree at the same moment, which no single
 * rusage figure gives: GNU time's %M (wait4's ru_maxrss) is the peak of the *largest single*
 * process, not of the tree. So two figures are taken and the larger is reported:
 *   1. every `pollMs` (50 ms) the descendants of the spawned process are found by scanning /proc
 *      and reading each new process's /proc/<pid>/stat for its parent (this kernel has no
 *      /proc/<pid>/task/<tid>/children), and their resident sets (the rss field of the same
 *      stat line, equal to VmRSS) are summed; the peak of that sum is kept. A sum of RSS counts
 *      pages shared between processes once per process (libc, and the file list that rsync's
 *      receiver shares copy-on-write with its forked generator), so the sum of Pss from
 *      /proc/<pid>/smaps_rollup (shared pages split among their users) is sampled too, as often
 *      as keeps its cost near 2% of the wall time but at least once a second, and returned as
 *      `sampledTreePssBytes` for readers who want the smaller, fairer figure (sampled less often,
 *      it may miss a short peak);
 *   2. when /usr/bin/time exists the command runs under `time -f %M`, which catches the exact
 *      peak of the largest process even if it lived or peaked between two samples.
 * Sampling can miss a spike shorter than the period, so the result is a lower bound of the true
 * tree peak, and a close one for the steady streaming pipelines measured here. The poll itself
 * costs CPU that the measured processes share: about 1 ms per sample with a dozen processes in the
 * tree (a scan of /proc plus ~25 us per member), i.e. ~2% of one core at 50 ms, plus at most ~2%
 * for the Pss reads.
 */
import { spawn, spawnSync } from 'node:child_process'
import { accessSync, closeSync, constants, openSync, readdirSync, readSync, statfsSync, writeFileSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { constants as osConstants, tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { NoSpaceError, SnapshotError, UsageError } from '../src/core/errors.js'

/** A benchmark step could not run or did not do its job. */
export class BenchError extends SnapshotError {
  override readonly code: string = 'ERR_BENCH'
}

/** A tool the benchmark needs is missing and could not be installed. */
export class ToolMissingError extends BenchError {
  override readonly code = 'ERR_TOOL_MISSING'
}

// ---------------------------------------------------------------------------------------------
// measureCommand

/** An argv, run as is, or a script run by `bash -o pipefail -c` (`sh -c` when there is no bash). */
export type CommandSpec = readonly string[] | { shell: string }

export interface MeasureOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Sampling period of the process tree, in milliseconds. */
  pollMs?: number
  /** Keep at most this many bytes of stdout and of stderr (the rest is dropped). */
  maxOutputBytes?: number
  /** Also sample Pss from smaps_rollup (a page-table walk per process: costs more than VmRSS). */
  samplePss?: boolean
  /** false: time only, no sampling and no GNU time (for untimed chores such as rm and cp). */
  measureMemory?: boolean
}

export interface Measurement {
  seconds: number
  /** max(sampledTreeRssBytes, largestProcessRssBytes): see the module comment. */
  peakRssBytes: number
  exitCode: number
  stdout: string
  stderr: string
  /** Peak over the samples of the sum of VmRSS over the process tree (the wrapper excluded). */
  sampledTreeRssBytes: number
  /** Peak over the samples of the sum of Pss over the process tree; 0 when not sampled. */
  sampledTreePssBytes: number
  /** GNU time's %M, the peak RSS of the largest single process; null without /usr/bin/time. */
  largestProcessRssBytes: number | null
  samples: number
}

const GNU_TIME = '/usr/bin/time'

export function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue
    const candidate = join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not in this directory
    }
  }
  return null
}

function hasGnuTime(): boolean {
  try {
    accessSync(GNU_TIME, constants.X_OK)
    return true
  } catch {
    return false
  }
}

export function shellArgv(script: string): string[] {
  return findOnPath('bash') ? ['bash', '-o', 'pipefail', '-c', script] : ['sh', '-c', script]
}

/** Quotes one word for sh/bash. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./=:,@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`
}

const procBuf = Buffer.alloc(8192)

/** Reads a small /proc file; open/read/close with a shared buffer is 2-8x cheaper than readFileSync. */
function readProc(path: string): string | null {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch {
    return null // exited meanwhile
  }
  try {
    const n = readSync(fd, procBuf, 0, procBuf.length, 0)
    return procBuf.toString('latin1', 0, n)
  } catch {
    return null
  } finally {
    closeSync(fd)
  }
}

interface ProcStat {
  ppid: number
  start: number
  rssPages: number
}

function procStat(pid: number | 'self'): ProcStat | null {
  const text = readProc(`/proc/${pid}/stat`)
  if (text === null) return null
  // Fields after the command name, which is in parentheses and may contain anything.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { ppid: Number(f[1]), start: Number(f[19]), rssPages: Number(f[21]) }
}

let pageSizeCache: number | undefined
function pageSize(): number {
  if (pageSizeCache === undefined) {
    const out = spawnSync('getconf', ['PAGESIZE'], { encoding: 'utf8' })
    pageSizeCache = Number(out.stdout) > 0 ? Number(out.stdout) : 4096
  }
  return pageSizeCache
}

/**
 * Samples the process tree under `root`: one scan of /proc, and a read of /proc/<pid>/stat for
 * each member of the tree and each process not seen before. A process seen outside the tree
 * (started before the root, or with a parent outside) can never join it, so it is never read
 * again: on a machine where others start processes all the time that keeps a sample cheap. A
 * process once seen in the tree stays counted while it lives, even if reparented.
 */
class TreeSampler {
  peakRss = 0
  peakPss = 0
  samples = 0
  private readonly foreign = new Set<number>()
  private readonly members = new Map<number, number>() // pid -> start time
  private readonly rootStart: number
  private readonly page = pageSize()
  private nextPssAt = 0
  private readonly privateCache = new Map<number, { at: number; bytes: number }>()

  constructor(
    private readonly root: number,
    private readonly includeRoot: boolean,
    private readonly samplePss: boolean,
  ) {
    this.rootStart = procStat(root)?.start ?? 0
  }

  /** A forked child's own memory: its private pages (smaps_rollup), read at most once a second per child. */
  private privateBytes(pid: number): number {
    const now = performance.now()
    const cached = this.privateCache.get(pid)
    if (cached && now - cached.at < 1000) return cached.bytes
    const text = readProc(`/proc/${pid}/smaps_rollup`) ?? ''
    const bytes = kibField(text, '\nPrivate_Clean:') + kibField(text, '\nPrivate_Dirty:')
    this.privateCache.set(pid, { at: now, bytes })
    return bytes
  }

  sample(): void {
    const seen = new Map<number, ProcStat>()
    for (const name of readdirSync('/proc')) {
      const c = name.charCodeAt(0)
      if (c < 48 || c > 57) continue
      const pid = Number(name)
      if (this.foreign.has(pid)) continue
      const st = procStat(pid)
      if (!st) continue
      if (st.start < this.rootStart) this.foreign.add(pid)
      else seen.set(pid, st)
    }
    const inTree = new Set<number>()
    for (const [pid, st] of seen) if (pid === this.root || this.members.get(pid) === st.start) inTree.add(pid)
    for (let grew = true; grew; ) {
      grew = false
      for (const [pid, st] of seen) {
        if (!inTree.has(pid) && inTree.has(st.ppid)) {
          inTree.add(pid)
          this.members.set(pid, st.start)
          grew = true
        }
      }
    }
    for (const pid of seen.keys()) if (!inTree.has(pid)) this.foreign.add(pid)
    if (!this.includeRoot) inTree.delete(this.root)
    let rss = 0
    for (const pid of inTree) {
      const st = seen.get(pid)!
      rss += sharesParentImage(pid, st.ppid, inTree) ? this.privateBytes(pid) : st.rssPages * this.page
    }
    this.samples++
    if (rss > this.peakRss) this.peakRss = rss

    // Pss needs a page-table walk per process (~1 ms for a large one): sampled no more often than
    // keeps its CPU cost near 2% of the wall time (CPU, not wall: on a loaded machine a preempted
    // read would look costly), and at least once a second.
    const now = performance.now()
    if (this.samplePss && now >= this.nextPssAt) {
      const cpu = process.cpuUsage()
      let pss = 0
      for (const pid of inTree) pss += kibField(readProc(`/proc/${pid}/smaps_rollup`) ?? '', '\nPss:')
      const used = process.cpuUsage(cpu)
      const costMs = (used.user + used.system) / 1000
      this.nextPssAt = now + Math.min(1000, costMs * 50)
      if (pss > this.peakPss) this.peakPss = pss
    }
  }
}

/**
 * A child that runs its parent's program image (same command line): a fork not yet exec'd (a pull
 * starting `sync -f`), or a worker that never execs (rsync's receiver). It maps its parent's pages
 * copy-on-write, so its RSS repeats the parent's: only its private pages are its own.
 */
function sharesParentImage(pid: number, ppid: number, inTree: ReadonlySet<number>): boolean {
  if (!inTree.has(ppid)) return false
  const mine = readProc(`/proc/${pid}/cmdline`)
  return mine !== null && mine === readProc(`/proc/${ppid}/cmdline`)
}

function kibField(text: string, field: string): number {
  const at = text.indexOf(field)
  if (at < 0) return 0
  return parseInt(text.slice(at + field.length), 10) * 1024 || 0
}

/** Runs a command to its end and reports wall time, peak RSS of its process tree, and output. */
export async function measureCommand(cmd: CommandSpec, opts: MeasureOptions = {}): Promise<Measurement> {
  const argv = Array.isArray(cmd) ? [...(cmd as readonly string[])] : shellArgv((cmd as { shell: string }).shell)
  if (argv.length === 0) throw new BenchError('measureCommand: empty command')
  const pollMs = opts.pollMs ?? 50
  const maxOutput = opts.maxOutputBytes ?? 1 << 20
  const memory = opts.measureMemory ?? true
  const timed = memory && hasGnuTime()
  const scratch = timed ? await mkdtemp(join(tmpdir(), 'bench-time-')) : null
  const timeFile = scratch ? join(scratch, 'maxrss') : null
  const full = timeFile ? [GNU_TIME, '-f', '%M', '-o', timeFile, '--', ...argv] : argv
  try {
    const started = process.hrtime.bigint()
    const child = spawn(full[0]!, full.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    let outBytes = 0
    let errBytes = 0
    child.stdout.on('data', (b: Buffer) => {
      if (outBytes < maxOutput) out.push(b.subarray(0, maxOutput - outBytes))
      outBytes += b.length
    })
    child.stderr.on('data', (b: Buffer) => {
      if (errBytes < maxOutput) err.push(b.subarray(0, maxOutput - errBytes))
      errBytes += b.length
    })
    // Without /proc (not Linux) only GNU time's figure, if any, is left.
    const sampler = memory && child.pid && procStat('self') ? new TreeSampler(child.pid, !timed, opts.samplePss ?? true) : null
    const timer = sampler ? setInterval(() => sampler.sample(), pollMs) : null
    sampler?.sample()
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolvePromise, reject) => {
      child.once('error', reject)
      child.once('close', (c, s) => resolvePromise([c, s]))
    }).finally(() => {
      if (timer) clearInterval(timer)
    })
    const seconds = Number(process.hrtime.bigint() - started) / 1e9

    let largest: number | null = null
    if (timeFile) {
      // On a signal GNU time writes "Command terminated by signal N" first: %M is the last line.
      const lines = (await readFile(timeFile, 'utf8').catch(() => '')).trim().split('\n')
      const kib = parseInt(lines.at(-1) ?? '', 10)
      if (Number.isFinite(kib)) largest = kib * 1024
    }
    const sampledRss = sampler?.peakRss ?? 0
    return {
      seconds,
      peakRssBytes: Math.max(sampledRss, largest ?? 0),
      exitCode: code ?? 128 + signalNumber(signal),
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
      sampledTreeRssBytes: sampledRss,
      sampledTreePssBytes: sampler?.peakPss ?? 0,
      largestProcessRssBytes: largest,
      samples: sampler?.samples ?? 0,
    }
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true })
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return (signal && osConstants.signals[signal]) || 0
}

/** Runs a command (a chore: no memory sampling) and throws a BenchError with the end of its stderr if it fails. */
export async function run(cmd: CommandSpec, what: string, opts: MeasureOptions = {}): Promise<Measurement> {
  const m = await measureCommand(cmd, { measureMemory: false, ...opts })
  return mustSucceed(m, what)
}

export function mustSucceed(m: Measurement, what: string): Measurement {
  if (m.exitCode !== 0) {
    const tail = m.stderr.trim().split('\n').slice(-5).join('\n')
    throw new BenchError(`${what} failed with exit code ${m.exitCode}${tail ? `:\n${tail}` : ''}`)
  }
  return m
}

// ---------------------------------------------------------------------------------------------
// Trees

export interface TreeStats {
  files: number
  dirs: number
  /** Apparent size (st_size) of the regular files. */
  bytes: number
  /** Symlinks, devices and the like. */
  other: number
  /** Disk blocks allocated to all of the entries (what a copy of the tree takes), in bytes. */
  diskBytes: number
}

/**
 * Counts under `dir` (not counting `dir`) with `find -printf`, which stats ~1M files in a couple
 * of seconds, several times faster than readdir + lstat from Node.
 */
export async function treeStats(dir: string): Promise<TreeStats> {
  const stats: TreeStats = { files: 0, dirs: 0, bytes: 0, other: 0, diskBytes: 0 }
  await streamLines(['find', dir, '-mindepth', '1', '-printf', '%y %s %b\n'], `find ${dir}`, (line) => {
    const type = line[0]
    const space = line.indexOf(' ', 2)
    stats.diskBytes += Number(line.slice(space + 1)) * 512 // %b counts 512-byte blocks
    if (type === 'f') {
      stats.files++
      stats.bytes += Number(line.slice(2, space))
    } else if (type === 'd') {
      stats.dirs++
    } else if (line.length > 0) {
      stats.other++
    }
  })
  return stats
}

/** Apparent size of the regular files under `dir`. */
export async function dirBytes(dir: string): Promise<number> {
  return (await treeStats(dir)).bytes
}

/** Runs a command and hands each line of its stdout to `onLine`, without holding the output. */
function streamLines(argv: string[], what: string, onLine: (line: string) => void): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
    let rest = ''
    let stderr = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      const text = rest + chunk
      let start = 0
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
        onLine(text.slice(start, nl))
        start = nl + 1
      }
      rest = text.slice(start)
    })
    child.stderr.on('data', (b: Buffer) => {
      if (stderr.length < 4096) stderr += b.toString('utf8')
    })
    child.once('error', reject)
    child.once('close', (code) => {
      if (rest) onLine(rest)
      if (code === 0) resolvePromise()
      else reject(new BenchError(`${what} failed with exit code ${code}: ${stderr.trim()}`))
    })
  })
}

/**
 * Why two trees differ, or null when they hold the same paths, types and sizes (`listing`), and
 * also the same file contents (`content`, by `diff -r`, which reads every file of both).
 */
export async function treeDifference(a: string, b: string, depth: 'listing' | 'content'): Promise<string | null> {
  const list = async (dir: string): Promise<string[]> => {
    const lines: string[] = []
    await streamLines(['find', dir, '-mindepth', '1', '-printf', '%P\t%y\t%s\n'], `find ${dir}`, (l) => {
      if (!l) return
      // Directory sizes depend on the history of the directory, not its content.
      lines.push(l.includes('\td\t') ? l.slice(0, l.lastIndexOf('\t')) : l)
    })
    return lines.sort()
  }
  const [la, lb] = await Promise.all([list(a), list(b)])
  if (la.length !== lb.length) return `${a} has ${la.length} entries, ${b} has ${lb.length}`
  for (let i = 0; i < la.length; i++) {
    if (la[i] !== lb[i]) return `first difference: '${la[i]}' in ${a}, '${lb[i]}' in ${b}`
  }
  if (depth === 'content') {
    const m = await measureCommand(['diff', '-rq', '--no-dereference', a, b], { maxOutputBytes: 4096, measureMemory: false })
    if (m.exitCode === 1) return `contents differ: ${m.stdout.trim().split('\n').slice(0, 3).join('; ')}`
    mustSucceed(m, `diff -r ${a} ${b}`)
  }
  return null
}

/** Removes a tree with `rm -rf` (several times faster than fs.rm on a million files). */
export async function removeTree(dir: string): Promise<void> {
  await run(['rm', '-rf', '--', dir], `rm -rf ${dir}`)
}

/**
 * Removes several trees, `concurrency` rm processes at a time: unlinking is mostly kernel CPU,
 * so two processes use both cores. Removing a million real files takes minutes.
 */
export async function removeTrees(dirs: readonly string[], concurrency = 2): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < dirs.length) await removeTree(dirs[next++]!)
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, dirs.length) }, worker))
}

// ---------------------------------------------------------------------------------------------
// Page cache

/**
 * Writes out every dirty page (`sync`) before a timed step, so that a step never pays for the
 * writes of the one before it: a replica's syncfs would otherwise flush the master's fresh writes
 * when both live on one filesystem, as they do here and never do in production.
 */
export async function flushDirtyPages(): Promise<void> {
  await measureCommand(['sync'], { measureMemory: false })
}

/**
 * Empties the page cache (and dentries and inodes) when permitted: true when it did. Needs root
 * outside a container; elsewhere a no-op that says so.
 */
export async function dropCaches(): Promise<boolean> {
  await flushDirtyPages()
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3')
    return true
  } catch {
    return false
  }
}

/**
 * Brings a tree into the page cache: file data and metadata (`data`), or metadata only (a stat of
 * every entry). A path to a single file is read with cat.
 */
export async function warmTree(path: string, what: 'data' | 'metadata'): Promise<void> {
  const q = shellQuote(path)
  const script =
    what === 'metadata'
      ? `find ${q} -printf '%s\\n' > /dev/null`
      : `if [ -d ${q} ]; then tar -C ${q} -cf - . | cat > /dev/null; else cat ${q} > /dev/null; fi`
  await run({ shell: script }, `warming ${path}`)
}

// ---------------------------------------------------------------------------------------------
// Tools and disk space

let installQueue: Promise<unknown> = Promise.resolve()
let aptUpdated = false

/**
 * The path of `name` on PATH; when it is missing, installs `debianPackage` with apt-get (one
 * `apt-get update` per process first). Throws ToolMissingError when that is impossible.
 */
export function ensureTool(name: string, debianPackage: string, log: (line: string) => void = logLine): Promise<string> {
  // Serialized: two apt-get runs at once would fight over the dpkg lock.
  const next = installQueue.then(async () => {
    const found = findOnPath(name)
    if (found) return found
    const advice = `install it with 'apt-get install ${debianPackage}' and run again`
    if (!findOnPath('apt-get')) throw new ToolMissingError(`${name} is not on PATH and there is no apt-get here: ${advice}`)
    if (process.getuid?.() !== 0) throw new ToolMissingError(`${name} is not on PATH and installing needs root: ${advice}`)
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    if (!aptUpdated) {
      log(`${name} is missing: apt-get update`)
      const m = await measureCommand(['apt-get', 'update'], { env, measureMemory: false })
      if (m.exitCode !== 0) throw new ToolMissingError(`${name} is missing and 'apt-get update' failed (${lastLine(m.stderr)}): ${advice}`)
      aptUpdated = true
    }
    log(`apt-get install -y ${debianPackage}`)
    const m = await measureCommand(['apt-get', 'install', '-y', '--no-install-recommends', debianPackage], { env, measureMemory: false })
    if (m.exitCode !== 0) throw new ToolMissingError(`${name} is missing and 'apt-get install ${debianPackage}' failed (${lastLine(m.stderr)})`)
    const installed = findOnPath(name)
    if (!installed) throw new ToolMissingError(`installed ${debianPackage} but ${name} is still not on PATH`)
    return installed
  })
  installQueue = next.catch(() => undefined)
  return next
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? ''
}

export interface FreeSpace {
  bytes: number
  inodes: number
}

export function freeSpace(dir: string): FreeSpace {
  const s = statfsSync(dir)
  return { bytes: s.bavail * s.bsize, inodes: s.ffree }
}

/** Throws NoSpaceError, saying what to change, unless `dir`'s filesystem has room for `need`. */
export function requireSpace(dir: string, need: FreeSpace, what: string, advice: string): void {
  const free = freeSpace(dir)
  if (free.bytes < need.bytes || free.inodes < need.inodes) {
    throw new NoSpaceError(
      `${what} needs ${formatBytes(need.bytes)} and ${need.inodes.toLocaleString('en-US')} inodes in ${dir}, ` +
        `which has ${formatBytes(free.bytes)} and ${free.inodes.toLocaleString('en-US')} inodes free: ${advice}`,
    )
  }
}

// ---------------------------------------------------------------------------------------------
// Results table

export interface BenchRow {
  label: string
  seconds?: number
  peakRssMiB?: number
  /** Bytes kept on the master (archives, state), if the method keeps any. */
  storeBytes?: number
  /** Bytes sent to one replica. */
  transferredBytes?: number
  /** A ratio the producer defines in its caption (the baselines: transferred / tree bytes). */
  ratio?: number
  notes?: string
}

export function rowFromMeasurement(label: string, m: Measurement, extra: Omit<BenchRow, 'label' | 'seconds' | 'peakRssMiB'> = {}): BenchRow {
  return { label, seconds: m.seconds, peakRssMiB: m.peakRssBytes / 1048576, ...extra }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let u = 0
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[u]}`
}

const COLUMNS: { title: string; right: boolean; cell: (r: BenchRow) => string }[] = [
  { title: 'step', right: false, cell: (r) => r.label },
  { title: 'wall s', right: true, cell: (r) => (r.seconds === undefined ? '-' : r.seconds.toFixed(2)) },
  { title: 'peak RSS MiB', right: true, cell: (r) => (r.peakRssMiB === undefined ? '-' : r.peakRssMiB.toFixed(1)) },
  { title: 'store', right: true, cell: (r) => (r.storeBytes === undefined ? '-' : formatBytes(r.storeBytes)) },
  { title: 'sent per replica', right: true, cell: (r) => (r.transferredBytes === undefined ? '-' : formatBytes(r.transferredBytes)) },
  { title: 'ratio', right: true, cell: (r) => (r.ratio === undefined ? '-' : r.ratio.toPrecision(3)) },
  { title: 'notes', right: false, cell: (r) => r.notes ?? '' },
]

/** An aligned plain-text table for a terminal. */
export function formatTextTable(rows: readonly BenchRow[]): string {
  const cells = rows.map((r) => COLUMNS.map((c) => c.cell(r)))
  const widths = COLUMNS.map((c, i) => Math.max(c.title.length, ...cells.map((row) => row[i]!.length)))
  const line = (values: string[]): string =>
    values
      .map((v, i) => (COLUMNS[i]!.right ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()
  return [line(COLUMNS.map((c) => c.title)), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n') + '\n'
}

/** A GitHub markdown table, numbers right-aligned, for BENCHMARKS.md. */
export function formatMarkdownTable(rows: readonly BenchRow[]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|')
  const head = `| ${COLUMNS.map((c) => c.title).join(' | ')} |`
  const rule = `|${COLUMNS.map((c) => (c.right ? '---:' : '---')).join('|')}|`
  const body = rows.map((r) => `| ${COLUMNS.map((c) => esc(c.cell(r))).join(' | ')} |`)
  return [head, rule, ...body].join('\n') + '\n'
}

// ---------------------------------------------------------------------------------------------

/** Progress lines go to stderr, so stdout keeps only results. */
/** A command-line count: a whole number of at least `least`, or a UsageError naming the flag. */
export function wholeNumberFlag(flag: string, text: string | undefined, least: number): number {
  const n = Number(text)
  if (text === undefined || text === '' || !Number.isSafeInteger(n) || n < least) {
    throw new UsageError(`${flag} takes a whole number of at least ${least}, not '${text ?? ''}'`)
  }
  return n
}

export function logLine(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
}
