import * as nodeCrypto from 'node:crypto'
import { quotePath } from '../core/byte-path.js'
import { mtimeFromNs } from '../core/mtime.js'
import { CARRIED_MODE_BITS, type TreeEntry } from '../core/tree-entry.js'
import { linkTargetProblem, pathProblem } from '../core/tree-path.js'
import { modeOfSig, mtimeOfSig, scanTree, sizeOfSig, type ScanRecord } from '../fs/tree-scan.js'
import { entryFromIndex, IndexSlot, MasterIndex, racySig, type IndexRows } from './master-index.js'
import type { SourceReader } from './source-reader.js'
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
  /** Files to read: new, or with a stat signature that moved. */
  readonly toRead: FileToRead[]
  /** Directories and symlinks new or different since the previous snapshot. */
  readonly changed: Map<string, TreeEntry>
  /** Previous entries of changed or deleted paths, for the digest. */
  readonly previous: Map<string, TreeEntry>
  readonly deleted: string[]
  readonly warnings: string[]
  readonly scanStartNs: bigint
}

/** A file to read: its slot in the new index, filled once it is read. */
export class FileToRead extends IndexSlot {
  /** What reading it during the scan gave (null: gone, or packed and let go: see release). */
  read?: FileRead | null

  /** Packed: the bytes read during the scan, if any, are let go (readIntoIndex is done with it). */
  release(): void {
    if (this.read) this.read = null
  }

  constructor(
    path: string,
    /** The scan's stat signature, which the read must find again (source-reader.ts). */
    readonly scanSig: string,
    previousRow: number,
  ) {
    super(path, undefined, '', previousRow)
  }
}

export interface FileRead {
  readonly entry: Extract<TreeEntry, { type: 'f' }>
  readonly data: Buffer
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

/** With a reader, changed files are read during the scan (see EARLY_READ_BUDGET). */
export async function scanMetadata(source: string, previousIndex: IndexRows, reader?: SourceReader): Promise<MetadataScan> {
  const scanStartNs = BigInt(Date.now()) * 1_000_000n
  const index = new MasterIndex(previousIndex)
  const toRead: FileToRead[] = []
  const changed = new Map<string, TreeEntry>()
  const previous = new Map<string, TreeEntry>()
  const warnings: string[] = []
  const deleted: string[] = []
  const state = { index, toRead, changed, previous, deleted, warnings, scanStartNs }
  let earlyBytes = 0

  await scanTree(source, (raw) => {
    if (index.carryNextIfSame(raw)) return
    const rec = raw.decode()
    const problem = recordProblem(rec)
    if (problem) {
      warnings.push(`skipped ${quotePath(rec.path)}: ${problem}`)
      return // its row, if any, is not taken: the path counts as deleted
    }
    const row = index.take(raw)
    if (row >= 0 && index.isRecord(row, raw)) {
      index.carry(row) // met out of the previous order, but unchanged
      return
    }
    if (rec.type === 'f') {
      // The previous row stands until the file is read; a file that turns out gone is dropped.
      const item = index.add(new FileToRead(rec.path, rec.sig, row))
      toRead.push(item)
      if (reader && earlyBytes < EARLY_READ_BUDGET && sizeOfSig(rec.sig) <= EARLY_READ_MAX_FILE) {
        const read = readIntoIndex(reader, item, state)
        if (read) {
          item.read = { entry: read.entry, data: Buffer.from(read.data) } // the reader reuses its buffer
          earlyBytes += read.data.length
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
      if (before) previous.set(rec.path, before)
    }
  })

  // Whatever the scan did not meet is gone; so are entries of paths now skipped.
  for (const [path, value] of index.finish()) {
    deleted.push(path)
    previous.set(path, entryFromIndex(path, value))
  }
  toRead.sort(byPath)
  return state
}

/** What a first build's scan gives: every entry as a row, no file read yet (whole-tree-index.ts). */
export interface WholeTreeScan {
  readonly index: WholeTreeIndex
  readonly warnings: string[]
  readonly scanStartNs: bigint
}

/** The scan of a build with no previous index: every entry that passes the checks becomes a row. */
export async function scanWholeTree(source: string): Promise<WholeTreeScan> {
  const scanStartNs = BigInt(Date.now()) * 1_000_000n
  const index = new WholeTreeIndex()
  const warnings: string[] = []
  await scanTree(source, (raw) => {
    const rec = raw.decode()
    const problem = recordProblem(rec)
    if (problem) warnings.push(`skipped ${quotePath(rec.path)}: ${problem}`)
    else index.add(raw, rec.sig)
  })
  return { index, warnings, scanStartNs }
}

function recordProblem(rec: ScanRecord): string | null {
  return rec.type === 's' ? 'not a regular file, directory or symlink' : pathProblem(rec.path) ?? (rec.type === 'l' ? linkTargetProblem(rec.target) : null)
}

/**
 * Reads one file the scan flagged, hashes it and records it in the index. Returns the entry and
 * its bytes, or null when the file vanished or turned into something else meanwhile (the
 * snapshot then does not carry it; the next one will). A file read during the scan is not read
 * again.
 */
export function readIntoIndex(reader: SourceReader, item: FileToRead, scan: Pick<MetadataScan, 'index' | 'warnings' | 'deleted' | 'previous' | 'scanStartNs'>): FileRead | null {
  if (item.read !== undefined) return item.read
  const read = readSourceFile(reader, item.path, item.scanSig, scan)
  if (read) {
    item.fill(read.indexSig, read.entry.sha256)
    return read
  }
  item.read = null
  item.drop()
  const before = scan.index.previousEntry(item)
  if (before) {
    scan.deleted.push(item.path)
    scan.previous.set(item.path, before)
  }
  return null
}

/**
 * Reads and hashes one source file the scan met with `scanSig`; with the signature its index row
 * should carry (racy if it was written too recently to trust). Null, with a warning, when the file
 * vanished or turned into something else since the scan.
 */
export function readSourceFile(reader: SourceReader, path: string, scanSig: string, scan: { warnings: string[]; scanStartNs: bigint }): (FileRead & { indexSig: string }) | null {
  const r = reader.read(path, scanSig)
  if ('gone' in r) {
    scan.warnings.push(`skipped ${quotePath(path)}: it changed during the build (${r.gone})`)
    return null
  }
  const st = r.stat
  const racy = st.mtimeNs >= scan.scanStartNs - RACY_WINDOW_NS || st.ctimeNs >= scan.scanStartNs - RACY_WINDOW_NS
  const sha256 = sha256Hex(r.data)
  const entry = { type: 'f' as const, path, mode: Number(st.mode & 0o7777n) & CARRIED_MODE_BITS, size: r.data.length, mtime: mtimeFromNs(st.mtimeNs), sha256 }
  return { entry, data: r.data, indexSig: racy ? racySig(r.sig) : r.sig }
}

/** sha256 in hex. crypto.hash (Node >= 20.12) makes no Hash object: 2-4x faster on tiny files. */
export const sha256Hex: (data: Uint8Array) => string =
  typeof nodeCrypto.hash === 'function' ? (data) => nodeCrypto.hash('sha256', data, 'hex') : (data) => nodeCrypto.createHash('sha256').update(data).digest('hex')

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
