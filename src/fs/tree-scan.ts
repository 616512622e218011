import { spawnSync } from 'node:child_process'
import { lstatSync, readdirSync, readlinkSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { SnapshotError } from '../core/errors.js'
import { mtimeFromNs } from '../core/mtime.js'
import { CARRIED_MODE_BITS, type RootMeta } from '../core/tree-entry.js'
import { crashPoint } from './crash-points.js'
import { findTakesFiles0From, parallelFind, singleFind } from './parallel-find.js'
import { statSignature } from './stat-signature.js'

/**
 * Metadata of every entry below a root, without reading any file. GNU find does this ~7x faster
 * than Node's lstat per file (BENCHMARKS.md, "Facts the code's comments rely on"), so it is used
 * when present; a portable walk in Node is the fallback.
 *
 * Both produce the same bytes for the same entry, one record `SIG\0PATH\0TARGET\0`:
 * - SIG is find's `%y %m %s %T@ %C@ %i`, the stat signature (stat-signature.ts makes and reads it):
 *   equal texts, same metadata, never parsed for the million entries that did not change.
 * - PATH is relative and '/'-separated, TARGET the symlink target (empty for anything else), both
 *   the raw bytes of the names.
 * So an index written after one scan is read after the other, and the master's index can tell an
 * unchanged entry by comparing bytes, without decoding a string (master-index.ts).
 */

/** A record decoded, for the entries that need a closer look (new, changed, to be read). */
export interface ScanRecord {
  /** f, d, l, or s for anything else (socket, fifo, device): skipped by the caller with a warning. */
  readonly type: 'f' | 'd' | 'l' | 's'
  readonly path: string // a byte string (byte-path.ts), as is target
  /** The record's SIG: everything that changes when the entry does (stat-signature.ts). */
  readonly sig: string
  readonly target: string // symlink target, '' otherwise
}

/**
 * One record in the scan's output buffer: `buf[start, end)`, with PATH at `pathStart` and TARGET at
 * `targetStart`. The scan hands the same object over for every record, so a million records cost
 * no allocation: read what you need before returning, or `decode()` it.
 */
export class RawScanRecord {
  buf: Buffer = Buffer.alloc(0)
  start = 0
  pathStart = 0
  targetStart = 0
  end = 0

  get type(): ScanRecord['type'] {
    const y = this.buf[this.start]
    return y === 0x66 ? 'f' : y === 0x64 ? 'd' : y === 0x6c ? 'l' : 's'
  }

  decode(): ScanRecord {
    const type = this.type
    return {
      type,
      path: this.buf.toString('latin1', this.pathStart, this.targetStart - 1), // bytes: byte-path.ts
      sig: this.buf.toString('latin1', this.start, this.pathStart - 1),
      target: type === 'l' ? this.buf.toString('latin1', this.targetStart, this.end - 1) : '',
    }
  }
}

let gnuFind: boolean | undefined
export function hasGnuFind(): boolean {
  if (gnuFind === undefined) {
    const r = spawnSync('find', ['--version'], { encoding: 'utf8' })
    gnuFind = r.status === 0 && r.stdout.includes('GNU findutils')
  }
  return gnuFind
}

/** The root directory's own mode and mtime (find -mindepth 1 does not print it). */
export function rootMeta(root: string): RootMeta {
  const st = lstatSync(root, { bigint: true })
  return { mode: Number(st.mode & 0o7777n) & CARRIED_MODE_BITS, mtime: mtimeFromNs(st.mtimeNs) }
}

/**
 * An entry that disappeared (or whose directory turned into something else) between being listed
 * and being looked at: `path` relative, as find or the walk names it, `why` the system's words.
 */
export type OnVanished = (path: string, why: string) => void

/**
 * Finds walking the tree at once (parallel-find.ts): the kernel's lstat is most of a scan, and it
 * runs on every core (two here; four at most, as more were never measured).
 */
export const DEFAULT_SCAN_PROCESSES = Math.min(4, availableParallelism())

/**
 * Streams scan records to `onRecord`; resolves when the whole tree was seen. With `processes` > 1
 * and a GNU find that takes `-files0-from`, several finds walk disjoint parts, and the records come
 * in the very order one find gives. A live tree changes
 * while it is walked (editors and generators write a temp file and rename it): an entry that
 * vanishes mid-walk is not an error but `onVanished`, and the walk goes on. Finds ahead of their
 * turn write into scratch files in `spillDir` (default: the system's temp directory).
 */
export async function scanTree(root: string, onRecord: (r: RawScanRecord) => void, onVanished: OnVanished = () => undefined, processes = DEFAULT_SCAN_PROCESSES, spillDir?: string): Promise<void> {
  const parser = new RecordParser(onRecord)
  if (process.env.SNAPSHOT_SCAN === 'node' || !hasGnuFind()) scanWithNode(root, parser, onVanished)
  else await scanWithFind(root, processes, parser, onVanished, spillDir)
  if (!parser.finished()) throw new SnapshotError(`scanning ${root}: truncated scan output`)
}

/** Cuts the scan's byte stream into records; a record may span chunks. */
export class RecordParser {
  private pending: Buffer | null = null
  private readonly raw = new RawScanRecord()
  private records = 0

  constructor(private readonly onRecord: (r: RawScanRecord) => void) {}

  push(chunk: Buffer): void {
    let start = 0
    if (this.pending) {
      // find writes 4 KiB at a time: join only the record cut in two, not the whole chunk.
      let nuls = 0
      for (const b of this.pending) if (b === 0) nuls++
      let end = -1
      while (nuls < 3 && (end = chunk.indexOf(0, end + 1)) >= 0) nuls++
      if (nuls < 3) {
        this.pending = Buffer.concat([this.pending, chunk])
        return
      }
      const joined = Buffer.concat([this.pending, chunk.subarray(0, end + 1)])
      this.pending = null
      this.parse(joined, 0)
      start = end + 1
    }
    start = this.parse(chunk, start)
    // Copy the unfinished record out of the chunk, rather than keep the whole chunk alive.
    if (start < chunk.length) this.pending = Buffer.from(chunk.subarray(start))
  }

  /** Hands over the whole records from `start` on; returns where the unfinished one begins. */
  private parse(buf: Buffer, start: number): number {
    const raw = this.raw
    raw.buf = buf
    for (;;) {
      const sigEnd = buf.indexOf(0, start)
      if (sigEnd < 0) break
      const pathEnd = buf.indexOf(0, sigEnd + 1)
      if (pathEnd < 0) break
      const end = buf.indexOf(0, pathEnd + 1)
      if (end < 0) break
      raw.start = start
      raw.pathStart = sigEnd + 1
      raw.targetStart = pathEnd + 1
      raw.end = end + 1
      this.onRecord(raw)
      if (++this.records % 1000 === 0) crashPoint('scan:records')
      start = end + 1
    }
    return start
  }

  finished(): boolean {
    return this.pending === null
  }
}

/**
 * find's words (LC_ALL=C: untranslated, ASCII quotes) for an entry that was listed and then gone
 * when looked at: it goes on walking and exits 1 at the end.
 */
const FIND_VANISHED = /^find: '?(.*?)'?: (No such file or directory|Not a directory)$/

/** find's stderr, as lines: vanished entries to `onVanished`, anything else kept for the error. */
class FindComplaints {
  said = ''
  constructor(private readonly onVanished: OnVanished) {}

  line = (line: string): void => {
    const m = FIND_VANISHED.exec(line)
    if (m) this.onVanished(m[1]!.replace(/^\.\//, ''), m[2]!)
    else if (line && this.said.length < 4096) this.said += `${line}\n`
  }

  /** Exit 1 with nothing but vanished entries said: the walk itself completed. */
  check(root: string, code: number): void {
    if (code !== 0 && !(code === 1 && this.said === '')) throw new SnapshotError(`scanning ${root} failed: ${this.said.trim() || `find exited ${code}`}`)
  }
}

/** One find, or several (parallel-find.ts): vanished entries reported, anything else find said an error. */
async function scanWithFind(root: string, processes: number, parser: RecordParser, onVanished: OnVanished, spillDir?: string): Promise<void> {
  const complaints = new FindComplaints(onVanished)
  const out = { data: (chunk: Buffer) => parser.push(chunk), line: complaints.line }
  const status = processes > 1 && findTakesFiles0From() ? await parallelFind(root, processes, out, spillDir ? { spillDir } : {}) : await singleFind(root, out)
  complaints.check(root, status)
}

const NUL = Buffer.from([0])
const SLASH = Buffer.from('/')
const BATCH_BYTES = 1 << 20

/** find's walk, in Node: the same records, in readdir order, preorder. Names stay raw bytes. */
function scanWithNode(root: string, parser: RecordParser, onVanished: OnVanished): void {
  let batch: Buffer[] = []
  let batched = 0
  const rootBytes = Buffer.from(root)
  // Below the root, an entry gone between readdir and lstat (or a directory gone before its
  // readdir) is reported, as find reports it, and the walk goes on.
  const unlessVanished = <T>(rel: Buffer, look: () => T): T | null => {
    try {
      return look()
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err
      onVanished(rel.toString(), code === 'ENOENT' ? 'No such file or directory' : 'Not a directory')
      return null
    }
  }
  const walk = (rel: Buffer | null): void => {
    const dir = rel ? Buffer.concat([rootBytes, SLASH, rel]) : rootBytes
    const names = rel ? unlessVanished(rel, () => readdirSync(dir, { encoding: 'buffer' })) : readdirSync(dir, { encoding: 'buffer' })
    for (const name of names ?? []) {
      const path = rel ? Buffer.concat([rel, SLASH, name]) : name
      const abs = Buffer.concat([rootBytes, SLASH, path])
      const looked = unlessVanished(path, () => {
        const st = lstatSync(abs, { bigint: true })
        return { st, target: st.isSymbolicLink() ? readlinkSync(abs, { encoding: 'buffer' }) : null }
      })
      if (!looked) continue
      const { st, target } = looked
      const sig = Buffer.from(statSignature(st), 'latin1')
      batch.push(sig, NUL, path, NUL, ...(target ? [target] : []), NUL)
      batched += sig.length + path.length + (target?.length ?? 0) + 3
      if (batched >= BATCH_BYTES) {
        parser.push(Buffer.concat(batch))
        batch = []
        batched = 0
      }
      if (st.isDirectory()) walk(path)
    }
  }
  walk(null)
  if (batch.length) parser.push(Buffer.concat(batch))
}
