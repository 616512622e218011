import { tmpdir } from 'node:os'
import { quotePath } from '../core/byte-path.js'
import { sha256Hex } from '../core/sha256.js'
import { TreeDigest } from '../core/tree-digest.js'
import { CARRIED_MODE_BITS, type TreeEntry } from '../core/tree-entry.js'
import { linkTargetProblem, pathProblem } from '../core/tree-path.js'
import { modeOfSig, mtimeOfSig, permissionBitsOfSig, racySig, sigBytesHaveSetId, sizeOfSig } from '../fs/stat-signature.js'
import { scanTree, type RawScanRecord, type ScanRecord } from '../fs/tree-scan.js'
import { entryFromIndex } from './index-row.js'
import type { IndexRows } from './index-rows.js'
import { IndexSlot, MasterIndex } from './master-index.js'
import type { FilesToRead } from './files-to-read.js'
import { EarlyReads } from './early-reads.js'
import type { StreamedBody } from '../archive/tar-pack.js'
import type { SourceFiles, SourceReader } from './source-reader.js'
import { WholeTreeIndex } from './whole-tree-index.js'

/**
 * Compares the source tree's metadata with the previous index, without reading any file. What
 * comes out: the new index (unchanged entries keep their rows), the files whose stat signature
 * moved (to be read), the directories and symlinks that differ, and the paths that are gone.
 *
 * An entry whose scan record is byte for byte its row in the previous index costs nothing more:
 * no string, and no path check either (the index only ever holds paths that passed them).
 */
export interface MetadataScan {
  readonly index: MasterIndex
  /** Files to read: new, or with a stat signature that moved (the index's rows of them). */
  readonly toRead: FilesToRead
  /** Directories and symlinks new or different since the previous snapshot. */
  readonly changed: Map<string, TreeEntry>
  /**
   * The tree digest's change so far: the previous entries of changed or deleted paths taken out,
   * the changed directories and symlinks put in (files join as the build reads them). Summed as
   * they come rather than kept: at 1M files a build holding both versions of every changed entry
   * held ~40 MiB more at its peak (BENCHMARKS.md, "The exact copy").
   */
  readonly digestChange: TreeDigest
  readonly deleted: string[]
  readonly warnings: string[]
  readonly skips: SkipLog
  readonly scanStartNs: bigint
  /** The bytes of files read during the scan, until they are packed. */
  readonly early: EarlyReads
}

/** Why an entry was left out of a snapshot (the keys of `skipped.byReason` in `build --json`). */
export type SkipReason = 'vanished' | 'changing' | 'special' | 'name' | 'link' | 'too-large'

export interface SkipSummary {
  readonly count: number
  readonly byReason: Partial<Record<SkipReason, number>>
}

/** Past this many, per-entry warnings of one kind give way to a count: a build must not print a million lines. */
const MAX_WARNINGS_PER_KIND = 100

/**
 * What a build leaves out, and why: every entry counted, one warning per subtree. The scan is
 * preorder (find's and the walk's order), so the entries below a skipped directory come right
 * after it: they are skipped with it (a replica could not hold them without their parent) and
 * counted into its one warning, which says how many there were.
 */
export class SkipLog {
  count = 0
  readonly byReason: Partial<Record<SkipReason, number>> = {}
  /** The skipped directory whose entries are still coming: its path + '/', its reason, its warning. */
  private subtree: { prefix: string; reason: SkipReason; warning: number; text: string; below: number } | null = null
  private warned = 0
  setIdDropped = 0
  private setIdWarned = 0

  constructor(private readonly warnings: string[]) {}

  /** True when `path` lies below a directory skipped earlier in this scan: counted, not warned. */
  below(path: string): boolean {
    const t = this.subtree
    if (t === null) return false
    if (!path.startsWith(t.prefix)) {
      this.closeSubtree()
      return false
    }
    t.below++
    this.tally(t.reason)
    return true
  }

  skip(path: string, reason: SkipReason, why: string, isDir = false): void {
    this.closeSubtree()
    this.tally(reason)
    const text = `skipped ${quotePath(path)}: ${why}`
    let warning = -1
    if (this.warned++ < MAX_WARNINGS_PER_KIND) warning = this.warnings.push(text) - 1
    if (isDir) this.subtree = { prefix: `${path}/`, reason, warning, text, below: 0 }
  }

  /**
   * An entry find or the walk listed and then found gone. It may be reported (find's stderr) while
   * a skipped subtree's entries are still coming on stdout: that subtree stays open.
   */
  vanished(path: string, why: string): void {
    this.tally('vanished')
    if (this.warned++ < MAX_WARNINGS_PER_KIND) this.warnings.push(`skipped ${quotePath(path)}: it vanished during the scan (${why})`)
  }

  /** A file or directory carried without its setuid or setgid bit (replicas refuse them). */
  setIdBits(path: string, mode: number): void {
    this.setIdDropped++
    if (this.setIdWarned++ < MAX_WARNINGS_PER_KIND) {
      this.warnings.push(`dropped the setuid/setgid bits of ${quotePath(path)} (mode ${mode.toString(8)} carried as ${(mode & CARRIED_MODE_BITS).toString(8)}): replicas never carry them`)
    }
  }

  /** After the scan and the reads: the counts, and the lines that stood for the warnings left unsaid. */
  finish(): SkipSummary {
    this.closeSubtree()
    if (this.warned > MAX_WARNINGS_PER_KIND) this.warnings.push(`skipped ${this.warned - MAX_WARNINGS_PER_KIND} more entries (subtrees) not named here`)
    if (this.setIdWarned > MAX_WARNINGS_PER_KIND) this.warnings.push(`dropped the setuid/setgid bits of ${this.setIdWarned - MAX_WARNINGS_PER_KIND} more entries not named here`)
    this.warned = Math.min(this.warned, MAX_WARNINGS_PER_KIND)
    this.setIdWarned = Math.min(this.setIdWarned, MAX_WARNINGS_PER_KIND)
    return this.summary()
  }

  summary(): SkipSummary {
    return { count: this.count, byReason: { ...this.byReason } }
  }

  private tally(reason: SkipReason): void {
    this.count++
    this.byReason[reason] = (this.byReason[reason] ?? 0) + 1
  }

  private closeSubtree(): void {
    const t = this.subtree
    if (t === null) return
    this.subtree = null
    if (t.below > 0 && t.warning >= 0) this.warnings[t.warning] = `${t.text} (and the ${t.below} entries below it)`
  }
}

/** find's %m of a record (`f 4755 ...`): a setuid or setgid bit set, read from the bytes. */
function hasSetIdBits(raw: RawScanRecord): boolean {
  return sigBytesHaveSetId(raw.buf, raw.start, raw.pathStart)
}

/** Said for an entry carried without them; the whole permission field of its SIG (modeOfSig drops them). */
function setIdDropped(skips: SkipLog, rec: ScanRecord): void {
  skips.setIdBits(rec.path, permissionBitsOfSig(rec.sig))
}

/**
 * A file read during the scan was compared with its previous entry then, while that row was in
 * the index's window (one read of the index file less per file when packed): PREVIOUS_UNKNOWN (not
 * read then), the same entry (touched, not changed), or another (and the previous one is out of
 * the digest).
 */
export const PREVIOUS_UNKNOWN = 0
export const PREVIOUS_SAME = 1
export const PREVIOUS_REMOVED = 2

export interface FileRead {
  readonly entry: Extract<TreeEntry, { type: 'f' }>
  /** The bytes; a large file's come as a stream, read when packed (source-reader.ts). */
  readonly data: Buffer | StreamedBody
}

/** Files modified this close to the scan may change again within the clock's granularity. */
const RACY_WINDOW_NS = 2_000_000_000n

/**
 * While find walks the tree the build mostly waits for its output; changed files are read in that
 * time, as the scan meets them (find has just brought their inodes into the cache), up to this
 * many bytes kept for the archive. The rest are read when packed.
 */
const EARLY_READ_BUDGET = 32 << 20
const EARLY_READ_MAX_FILE = 64 << 10

/**
 * With a reader, changed files are read during the scan (see EARLY_READ_BUDGET), their bytes kept
 * in a file in `earlyDir` (early-reads.ts) until packed; the caller closes `early` when done. The
 * scan's finds ahead of their turn write there too (parallel-find.ts).
 */
export async function scanMetadata(source: string, previousIndex: IndexRows, reader?: SourceReader, earlyDir?: string, scanProcesses?: number): Promise<MetadataScan> {
  const scanStartNs = BigInt(Date.now()) * 1_000_000n
  const index = new MasterIndex(previousIndex)
  const toRead = index.files
  const changed = new Map<string, TreeEntry>()
  const digestChange = new TreeDigest()
  const warnings: string[] = []
  const deleted: string[] = []
  const skips = new SkipLog(warnings)
  const early = new EarlyReads(earlyDir ?? tmpdir())
  const state = { index, toRead, changed, digestChange, deleted, warnings, skips, scanStartNs, early }

  await scanTree(source, (raw) => {
    if (index.carryNextIfSame(raw)) {
      if (hasSetIdBits(raw)) setIdDropped(skips, raw.decode())
      return
    }
    const rec = raw.decode()
    if (skips.below(rec.path)) return
    const problem = recordProblem(rec)
    if (problem) {
      skips.skip(rec.path, problem.reason, problem.why, rec.type === 'd')
      return // its row, if any, is not taken: the path counts as deleted
    }
    if (hasSetIdBits(raw)) setIdDropped(skips, rec)
    const row = index.take(raw)
    if (row >= 0 && index.isRecord(row, raw)) {
      index.carry(row) // met out of the previous order, but unchanged
      return
    }
    if (rec.type === 'f') {
      // The previous row stands until the file is read; a file that turns out gone is dropped.
      const k = index.addFile(rec.path, rec.sig, row)
      if (reader && early.bytes < EARLY_READ_BUDGET && sizeOfSig(rec.sig) <= EARLY_READ_MAX_FILE) {
        const read = readIntoIndex(reader, k, state)
        if (read) {
          if (Buffer.isBuffer(read.data)) toRead.setEarly(k, early.keep(read.data)) // a copy: the reader reuses its buffer
          else toRead.setStreamed(k, read)
          toRead.setPrevious(k, fileChanged(state, k, read.entry) ? PREVIOUS_REMOVED : PREVIOUS_SAME)
        }
      }
      return
    }
    index.add(new IndexSlot(rec.path, rec.sig, rec.type === 'l' ? rec.target : ''))
    const before = row >= 0 ? entryFromIndex(rec.path, index.previousValue(row)) : undefined
    const mtime = mtimeOfSig(rec.sig)
    const entry: TreeEntry = rec.type === 'd' ? { type: 'd', path: rec.path, mode: modeOfSig(rec.sig), mtime } : { type: 'l', path: rec.path, target: rec.target, mtime }
    if (!before || !sameEntry(before, entry)) {
      changed.set(rec.path, entry)
      digestChange.add(entry)
      if (before) digestChange.remove(before)
    }
  }, (path, why) => skips.vanished(path, why), scanProcesses, earlyDir)

  // Whatever the scan did not meet is gone; so are entries of paths now skipped.
  for (const [path, value] of index.finish()) {
    deleted.push(path)
    digestChange.remove(entryFromIndex(path, value))
  }
  return state
}

/** What a first build's scan gives: every entry as a row, no file read yet (whole-tree-index.ts). */
export interface WholeTreeScan {
  readonly index: WholeTreeIndex
  readonly warnings: string[]
  readonly skips: SkipLog
  readonly scanStartNs: bigint
}

/**
 * The scan of a build with no previous index: every entry that passes the checks becomes a row.
 * The rows wait in a file in `spillDir` (whole-tree-index.ts); the caller closes the index.
 */
export async function scanWholeTree(source: string, scanProcesses?: number, spillDir?: string): Promise<WholeTreeScan> {
  const scanStartNs = BigInt(Date.now()) * 1_000_000n
  const index = new WholeTreeIndex(spillDir)
  const warnings: string[] = []
  const skips = new SkipLog(warnings)
  await scanTree(source, (raw) => {
    const rec = raw.decode()
    if (skips.below(rec.path)) return
    const problem = recordProblem(rec)
    if (problem) skips.skip(rec.path, problem.reason, problem.why, rec.type === 'd')
    else {
      if (hasSetIdBits(raw)) setIdDropped(skips, rec)
      index.add(raw, rec.sig)
    }
  }, (path, why) => skips.vanished(path, why), scanProcesses, spillDir)
  return { index, warnings, skips, scanStartNs }
}

/** The largest file a ustar header's size field holds (11 octal digits): larger ones are skipped. */
export const MAX_FILE_BYTES = 0o77777777777

function recordProblem(rec: ScanRecord): { reason: SkipReason; why: string } | null {
  if (rec.type === 's') return { reason: 'special', why: 'not a regular file, directory or symlink' }
  const path = pathProblem(rec.path)
  if (path) return { reason: 'name', why: path }
  if (rec.type === 'l') {
    const link = linkTargetProblem(rec.target)
    return link ? { reason: 'link', why: link } : null
  }
  if (rec.type === 'f' && sizeOfSig(rec.sig) > MAX_FILE_BYTES) return { reason: 'too-large', why: `larger than ${MAX_FILE_BYTES} bytes, the most a tar header holds` }
  return null
}

/**
 * Reads one file the scan flagged, hashes it and records it in the index. Returns the entry and
 * its bytes, or null when the file vanished or turned into something else meanwhile (the
 * snapshot then does not carry it; the next one will). A file read during the scan is not read
 * again.
 */
export function readIntoIndex(reader: SourceFiles, k: number, scan: Pick<MetadataScan, 'index' | 'skips' | 'deleted' | 'digestChange' | 'scanStartNs' | 'early'>): FileRead | null {
  const files = scan.index.files
  const early = files.early(k)
  if (early >= 0) {
    // Read during the scan, and filled then: the entry readSourceFile made, made again from the row.
    const data = scan.early.take(early)
    files.setEarly(k, -1)
    const sig = files.sig(k)
    return { entry: { type: 'f', path: files.path(k), mode: modeOfSig(sig), size: data.length, mtime: mtimeOfSig(sig), sha256: files.sha256(k) }, data }
  }
  const streamed = files.streamedRead(k)
  if (streamed) return streamed
  if (files.wasRead(k)) return null // read before, and packed or gone
  const path = files.path(k)
  const read = readSourceFile(reader, path, files.sig(k), scan)
  if (read) {
    files.fill(k, read.indexSig, read.entry.sha256)
    return read
  }
  files.drop(k)
  const before = scan.index.previousEntry(k)
  if (before) {
    scan.deleted.push(path)
    scan.digestChange.remove(before)
  }
  return null
}

/**
 * Reads and hashes one source file the scan met with `scanSig`; with the signature its index row
 * should carry (racy if it was written too recently to trust). Null, with a warning, when the file
 * vanished or turned into something else since the scan.
 */
export function readSourceFile(reader: SourceFiles, path: string, scanSig: string, scan: { skips: SkipLog; scanStartNs: bigint }): (FileRead & { indexSig: string }) | null {
  const r = reader.read(path, scanSig)
  if ('gone' in r) {
    const vanished = r.gone === 'ENOENT' || r.gone === 'ENOTDIR'
    scan.skips.skip(path, vanished ? 'vanished' : 'changing', `it changed during the build (${r.gone})`)
    return null
  }
  const racy = r.changedNs >= scan.scanStartNs - RACY_WINDOW_NS
  const { sha256, size, data } = 'large' in r ? { sha256: r.large.sha256, size: r.large.size, data: r.large } : { sha256: r.sha256 ?? sha256Hex(r.data), size: r.data.length, data: r.data }
  const entry = { type: 'f' as const, path, mode: modeOfSig(r.sig), size, mtime: mtimeOfSig(r.sig), sha256 }
  return { entry, data, indexSig: racy ? racySig(r.sig) : r.sig }
}

/**
 * Whether a file read differs from its previous entry (a touch with the same bytes does not); if
 * it does, the previous entry leaves the digest's change.
 */
export function fileChanged(scan: Pick<MetadataScan, 'index' | 'digestChange'>, k: number, entry: TreeEntry): boolean {
  const before = scan.index.previousEntry(k)
  if (before && sameEntry(before, entry)) return false
  if (before) scan.digestChange.remove(before)
  return true
}

/** Same content and metadata: a change of mtime alone (touch) is a change a replica must get. */
export function sameEntry(a: TreeEntry, b: TreeEntry): boolean {
  if (a.type !== b.type || a.mtime !== b.mtime) return false
  switch (a.type) {
    case 'f':
      return b.type === 'f' && a.mode === b.mode && a.sha256 === b.sha256
    case 'd':
      return b.type === 'd' && a.mode === b.mode
    case 'l':
      return b.type === 'l' && a.target === b.target
  }
}

export function byPath(a: { path: string }, b: { path: string }): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0
}
