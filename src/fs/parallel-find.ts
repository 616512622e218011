import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, readSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { SnapshotError } from '../core/errors.js'
import { openScratchFile } from './scratch-file.js'

/**
 * One tree walked by several GNU finds at once, its records handed over in the order one find
 * would give them (preorder, readdir order), byte for byte.
 *
 * Why: at a million files the build's scan is find's walk, ~3.8 s here, with Node's thread idle
 * 88% of it (--cpu-prof); most of find's time is the kernel's lstat, one entry after another. Two
 * finds on disjoint subtrees take it to 2.0-2.7 s on this machine's two cores (BENCHMARKS.md,
 * "The scan on two cores").
 *
 * How: the root is listed (`-maxdepth 1`); a directory below it whose walk would be a large share
 * of the tree is, if the top level has few directories, opened one level further (its own record
 * kept from the listing, its children becoming start points), down to a few levels. The start
 * points, in listing order, are cut into contiguous groups; each group is one find over
 * `-files0-from -` (any name is a start point, even '-x' or '('), printing its start points too
 * (`%p`, relative to the root). Outputs are passed on strictly in group order: the group whose turn
 * it is streams through a pipe, and a group started ahead of its turn has its find write straight
 * into an unlinked scratch file (scratch-file.ts), read back at its turn. So no find ever waits for
 * another, and the held output costs the build no memory and no copy: holding it in memory under a
 * cap, with many small groups to keep the cap met, paused the second find for most of a 1M-file
 * walk and cost a fork of the build's process per group (BENCHMARKS.md, "A build of a few changes").
 */

/** find's record (tree-scan.ts): the listing of the root prints paths with %P, groups with %p. */
export const RECORD_FORMAT = '%y %m %s %T@ %C@ %i\\0%P\\0%l\\0'
const GROUP_FORMAT = '%y %m %s %T@ %C@ %i\\0%p\\0%l\\0'

/**
 * Groups per find running at once: smaller groups balance the finds' work without sizes known,
 * but each costs a fork of the build's process (~6 ms of its CPU for an 85 MiB process, measured).
 */
const GROUPS_PER_PROCESS = 4
/** Open a level further while fewer directories than this are start points, per find process. */
const MIN_DIRS_PER_PROCESS = 8
const MAX_OPEN_DEPTH = 3

export interface FindOutput {
  /** Bytes of records, in order; the last call of a group ends on a record's end. */
  data(chunk: Buffer): void
  /** A line find wrote to its stderr. */
  line(text: string): void
}

let files0From: boolean | undefined
/** GNU find 4.9 or later (`-files0-from`): the parallel scan needs it; older finds scan alone. */
export function findTakesFiles0From(): boolean {
  if (files0From === undefined) files0From = spawnSync('find', ['-files0-from', '/dev/null', '-quit'], { stdio: 'ignore' }).status === 0
  return files0From
}

/** A piece of the walk in order: records already listed, or a group of start points for one find. */
export type ScanPiece = { readonly listed: Buffer } | { readonly startPoints: readonly Buffer[] }

export interface Listed {
  readonly record: Buffer
  readonly path: Buffer
  readonly isDir: boolean
}

/** Splits a listing's output into records (SIG\0PATH\0TARGET\0). */
export function splitRecords(out: Buffer): Listed[] {
  const listed: Listed[] = []
  let start = 0
  while (start < out.length) {
    const sigEnd = out.indexOf(0, start)
    const pathEnd = out.indexOf(0, sigEnd + 1)
    const end = out.indexOf(0, pathEnd + 1)
    if (sigEnd < 0 || pathEnd < 0 || end < 0) throw new SnapshotError('truncated listing from find')
    listed.push({ record: out.subarray(start, end + 1), path: out.subarray(sigEnd + 1, pathEnd), isDir: out[start] === 0x64 })
    start = end + 1
  }
  return listed
}

/**
 * The plan of a walk, pure: `list(dir)` gives a directory's entries as listed records (dir null:
 * the root). Directories are opened level by level while they are fewer than `minDirs`.
 */
export async function planWalk(list: (dir: Buffer | null) => Promise<Listed[]>, processes: number): Promise<ScanPiece[]> {
  // Items in preorder: a listed record, or a start point (an entry and everything below it).
  type Item = { kind: 'listed'; record: Buffer } | { kind: 'start'; entry: Listed }
  let items: Item[] = (await list(null)).map((entry) => ({ kind: 'start', entry }))
  const minDirs = processes * MIN_DIRS_PER_PROCESS
  for (let depth = 1; depth < MAX_OPEN_DEPTH; depth++) {
    const dirs = items.filter((i) => i.kind === 'start' && i.entry.isDir).length
    if (dirs === 0 || dirs >= minDirs) break
    const opened: Item[] = []
    for (const item of items) {
      if (item.kind === 'start' && item.entry.isDir) {
        opened.push({ kind: 'listed', record: item.entry.record })
        for (const entry of await list(item.entry.path)) opened.push({ kind: 'start', entry })
      } else opened.push(item)
    }
    items = opened
  }
  return groupStartPoints(items, processes * GROUPS_PER_PROCESS)
}

/** Runs of start points cut into about `groups` groups by their directories, listed records kept between them. */
function groupStartPoints(items: readonly ({ kind: 'listed'; record: Buffer } | { kind: 'start'; entry: Listed })[], groups: number): ScanPiece[] {
  const dirs = items.filter((i) => i.kind === 'start' && i.entry.isDir).length
  const perGroup = Math.max(1, Math.ceil(dirs / groups))
  const pieces: ScanPiece[] = []
  let points: Buffer[] = []
  let dirsInGroup = 0
  const close = (): void => {
    if (points.length) pieces.push({ startPoints: points })
    points = []
    dirsInGroup = 0
  }
  for (const item of items) {
    if (item.kind === 'listed') {
      close()
      const last = pieces.at(-1)
      if (last && 'listed' in last) pieces[pieces.length - 1] = { listed: Buffer.concat([last.listed, item.record]) }
      else pieces.push({ listed: item.record })
      continue
    }
    if (item.entry.isDir && dirsInGroup === perGroup) close()
    points.push(item.entry.path)
    if (item.entry.isDir) dirsInGroup++
  }
  close()
  return pieces
}

/** One directory's entries (the root's for null), listed by find: small, so held whole. */
function listWithFind(root: string, dir: Buffer | null, onLine: (text: string) => void, onStatus: (code: number) => void): Promise<Listed[]> {
  const args = ['-mindepth', '1', '-maxdepth', '1', '-printf', dir ? GROUP_FORMAT : RECORD_FORMAT]
  return new Promise((resolve, reject) => {
    const child = startFind(root, dir ? ['-files0-from', '-', ...args] : ['.', ...args], dir ? [dir] : null)
    const out: Buffer[] = []
    child.stdout!.on('data', (d: Buffer) => out.push(d))
    watchFind(child, onLine, (err, code) => {
      if (err) return reject(err)
      onStatus(code)
      resolve(splitRecords(Buffer.concat(out)))
    })
  })
}

/** find in `root`, its start points on its stdin, its output to a pipe or to the file `stdoutFd`. */
function startFind(root: string, args: string[], startPoints: readonly Buffer[] | null, stdoutFd?: number): ChildProcess {
  const child = spawn('find', args, { cwd: root, stdio: [startPoints ? 'pipe' : 'ignore', stdoutFd ?? 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } })
  if (startPoints) {
    child.stdin!.on('error', () => undefined) // find gone early: its exit says why
    const nul = Buffer.from([0])
    child.stdin!.end(Buffer.concat(startPoints.flatMap((p) => [p, nul])))
  }
  return child
}

/**
 * One find over the whole tree, its records streamed to `out` (scanners = 1, or a find without
 * -files0-from). Resolves with its exit status, as parallelFind does; a throw from `out.data`
 * stops find and rejects.
 */
export function singleFind(root: string, out: FindOutput): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = startFind(root, ['.', '-mindepth', '1', '-printf', RECORD_FORMAT], null)
    let failure: unknown
    child.stdout!.on('data', (chunk: Buffer) => {
      if (failure) return
      try {
        out.data(chunk)
      } catch (err) {
        failure = err
        child.kill()
      }
    })
    watchFind(child, out.line, (err, code) => (failure ? reject(failure) : err ? reject(err) : resolve(code)))
  })
}

/** find's stderr as lines, and its end: status 0 or 1 (find said something, and walked on), or an error. */
function watchFind(child: ChildProcess, line: (text: string) => void, done: (err: Error | null, code: number) => void): void {
  let partial = ''
  child.stderr!.on('data', (d: Buffer) => {
    const lines = (partial + d.toString('latin1')).split('\n')
    partial = lines.pop()!
    for (const l of lines) line(l)
  })
  let failed = false
  child.on('error', (err) => {
    failed = true
    done(new SnapshotError(`cannot run find: ${err.message}`, { cause: err }), -1)
  })
  child.on('close', (code, signal) => {
    if (failed) return
    if (partial) line(partial)
    if (code === 0 || code === 1) done(null, code)
    else done(new SnapshotError(`find exited ${code ?? signal}`), code ?? -1)
  })
}

/**
 * Walks `root` with up to `processes` finds at once (see above); `out` gets the records in one
 * find's order and the finds' stderr lines. Resolves with the highest exit status (0, or 1 when
 * find said something: the caller judges its lines, vanished entries or worse).
 */
export async function parallelFind(root: string, processes: number, out: FindOutput, opts: WalkOptions = {}): Promise<number> {
  let status = 0
  const pieces = await planWalk((dir) => listWithFind(root, dir, out.line, (code) => (status = Math.max(status, code))), processes)
  const finds = opts.finds ?? new SpareCores(processes).finds
  return Math.max(status, await runPieces(root, pieces, finds, out, opts.spillDir ?? tmpdir()))
}

/**
 * How many finds to run now: the cores this process did not use since the last asking, rounded,
 * at least one. A build that is busy itself (an hourly delta reads and compresses ~100,000 files
 * while it scans) is slowed by a second find on two cores (6.5 s against 8.0-8.7 at 1M), one that
 * waits on the walk (a few changes) is sped up (BENCHMARKS.md, "The scan on two cores").
 * process.cpuUsage counts every thread of the process, the reader threads too.
 */
export class SpareCores {
  private cpu = process.cpuUsage()
  private at = process.hrtime.bigint()
  private allowed = 1 // until there is a window to judge by

  constructor(
    private readonly most: number,
    private readonly cores = availableParallelism(),
  ) {}

  finds = (): number => {
    const now = process.hrtime.bigint()
    const windowUs = Number(now - this.at) / 1000
    if (windowUs < 20_000) return this.allowed // too short to judge
    const used = process.cpuUsage(this.cpu)
    this.cpu = process.cpuUsage()
    this.at = now
    this.allowed = spareFinds(this.cores, (used.user + used.system) / windowUs, this.most)
    return this.allowed
  }
}

/** Pure: finds to run on `cores` when this process kept `busy` cores busy, at most `most`, at least 1. */
export function spareFinds(cores: number, busy: number, most: number): number {
  return Math.max(1, Math.min(most, Math.round(cores - busy)))
}

interface Group {
  readonly child: ChildProcess
  /** The scratch file find writes into while the group waits for its turn (null: it streams through a pipe). */
  readonly file: { readonly fd: number; readAt: number } | null
  ended: boolean
}

/** The block a waiting group's file is read back in, reused: the bytes go to `FindOutput.data`, which reads them before it returns. */
const READ_BACK_BLOCK = 1 << 20

/** Passes on the bytes find has written into `file` since the last call. */
function readBack(file: { readonly fd: number; readAt: number }, block: Buffer, to: (chunk: Buffer) => void): void {
  for (let n; (n = readSync(file.fd, block, 0, block.length, file.readAt)) > 0; ) {
    file.readAt += n
    to(block.subarray(0, n))
  }
}

export interface WalkOptions {
  /** How many finds may run now (default: SpareCores, judged as the walk goes). */
  readonly finds?: () => number
  /** Where groups ahead of their turn write their output (default: the system's temp directory). */
  readonly spillDir?: string
}

function runPieces(root: string, pieces: readonly ScanPiece[], finds: () => number, out: FindOutput, spillDir: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const groups = new Map<number, Group>() // started, not yet passed on whole
    const block = Buffer.allocUnsafe(READ_BACK_BLOCK)
    let active = 0 // finds still running
    let next = 0 // the next piece to start
    let turn = 0 // the piece whose output is passed on now
    let status = 0
    let failed = false
    // Every 100 ms: the spare cores judged again, and the file of a group whose turn came while
    // its find still runs read on (it is also read when the find ends).
    const tick = setInterval(() => guarded(advance), 100)
    const closeFiles = (): void => {
      for (const g of groups.values()) if (g.file) closeSync(g.file.fd)
      groups.clear()
    }
    const fail = (err: unknown): void => {
      if (failed) return
      failed = true
      clearInterval(tick)
      for (const g of groups.values()) g.child.kill()
      closeFiles()
      reject(err)
    }
    const start = (i: number, startPoints: readonly Buffer[]): void => {
      // The group whose turn it is streams through a pipe; one ahead of its turn runs at full
      // speed into a file, never held in memory nor paused.
      const file = i === turn ? null : { fd: openScratchFile(spillDir, 'scan'), readAt: 0 }
      let child: ChildProcess
      try {
        child = startFind(root, ['-files0-from', '-', '-printf', GROUP_FORMAT], startPoints, file?.fd)
      } catch (err) {
        if (file) closeSync(file.fd)
        throw err
      }
      const g: Group = { child, file, ended: false }
      groups.set(i, g)
      active++
      child.stdout?.on('data', (d: Buffer) => {
        if (!failed) guarded(() => out.data(d))
      })
      watchFind(child, out.line, (err, code) => {
        if (err) return fail(err)
        status = Math.max(status, code)
        g.ended = true
        active--
        guarded(advance)
      })
    }
    const startMore = (): void => {
      const limit = finds()
      for (; !failed && next < pieces.length && (active < limit || active === 0); next++) {
        const piece = pieces[next]!
        if ('startPoints' in piece) start(next, piece.startPoints) // a listed piece is passed on at its turn
      }
    }
    // Passes on each piece whose turn has come, while its output is complete; a group whose find
    // still runs streams (its pipe) or is read on at each tick and at its end (its file).
    const advance = (): void => {
      while (!failed && turn < pieces.length) {
        const piece = pieces[turn]!
        if ('listed' in piece) {
          out.data(piece.listed)
          next = Math.max(next, ++turn)
          continue
        }
        const g = groups.get(turn)
        if (!g) break // not started: startMore starts it
        if (g.file) readBack(g.file, block, out.data)
        if (!g.ended) break
        if (g.file) closeSync(g.file.fd)
        groups.delete(turn++)
      }
      startMore()
      if (!failed && turn === pieces.length) {
        clearInterval(tick)
        resolve(status)
      }
    }
    const guarded = (f: () => void): void => {
      try {
        f()
      } catch (err) {
        fail(err)
      }
    }
    guarded(advance)
  })
}
