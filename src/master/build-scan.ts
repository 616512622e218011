import { createHash } from 'node:crypto'
import { CARRIED_MODE_BITS, type TreeEntry } from '../core/tree-entry.js'
import { linkTargetProblem, pathProblem } from '../core/tree-path.js'
import { scanTree, statSigOf, type ScanRecord } from '../fs/tree-scan.js'
import { entryFromIndex, indexValue, racyValue, sigOf, type MasterIndex } from './master-index.js'
import type { SourceReader } from './source-reader.js'

/**
 * Compares the source tree's metadata with the previous index, without reading any file. What
 * comes out: the new index (unchanged entries keep their values), the files whose stat signature
 * moved (to be read), the directories and symlinks that differ, and the paths that are gone.
 */
export interface MetadataScan {
  readonly index: MasterIndex
  /** Files to read: new, or with a stat signature that moved. */
  readonly toRead: ScanRecord[]
  /** Directories and symlinks new or different since the previous snapshot. */
  readonly changed: Map<string, TreeEntry>
  /** Previous entries of changed or deleted paths, for the digest. */
  readonly previous: Map<string, TreeEntry>
  readonly deleted: string[]
  readonly warnings: string[]
  readonly scanStartNs: bigint
}

/** Files modified this close to the scan may change again within the clock's granularity. */
const RACY_WINDOW_NS = 2_000_000_000n

export async function scanMetadata(source: string, previousIndex: MasterIndex): Promise<MetadataScan> {
  const scanStartNs = BigInt(Date.now()) * 1_000_000n
  const old = previousIndex
  const index: MasterIndex = new Map()
  const toRead: ScanRecord[] = []
  const changed = new Map<string, TreeEntry>()
  const previous = new Map<string, TreeEntry>()
  const warnings: string[] = []

  await scanTree(source, (rec) => {
    const problem = rec.type === 's' ? 'not a regular file, directory or symlink' : pathProblem(rec.path) ?? (rec.type === 'l' ? linkTargetProblem(rec.path, rec.target) : null)
    if (problem) {
      warnings.push(`skipped ${JSON.stringify(rec.path)}: ${problem}`)
      return
    }
    const oldValue = old.get(rec.path)
    if (oldValue !== undefined) old.delete(rec.path)
    if (rec.type === 'f') {
      if (oldValue !== undefined) index.set(rec.path, oldValue) // replaced once read, if it moved
      if (oldValue === undefined || sigOf(oldValue) !== rec.statSig) toRead.push(rec)
      return
    }
    const value = indexValue(rec.statSig, rec.type === 'l' ? rec.target : '')
    index.set(rec.path, value)
    const entry: TreeEntry = rec.type === 'd' ? { type: 'd', path: rec.path, mode: rec.mode } : { type: 'l', path: rec.path, target: rec.target }
    const before = oldValue === undefined ? undefined : entryFromIndex(rec.path, oldValue)
    if (!before || !sameEntry(before, entry)) {
      changed.set(rec.path, entry)
      if (before) previous.set(rec.path, before)
    }
  })

  // Whatever the scan did not meet is gone; so are entries of paths now skipped.
  const deleted: string[] = []
  for (const [path, value] of old) {
    deleted.push(path)
    previous.set(path, entryFromIndex(path, value))
  }
  toRead.sort(byPath)
  return { index, toRead, changed, previous, deleted, warnings, scanStartNs }
}

/**
 * Reads one file the scan flagged, hashes it and records it in the index. Returns the entry and
 * its bytes, or null when the file vanished or turned into something else meanwhile (the
 * snapshot then does not carry it; the next one will).
 */
export function readIntoIndex(reader: SourceReader, rec: ScanRecord, scan: MetadataScan): { entry: Extract<TreeEntry, { type: 'f' }>; data: Buffer } | null {
  const r = reader.read(rec)
  if ('gone' in r) {
    scan.warnings.push(`skipped ${JSON.stringify(rec.path)}: it changed during the build (${r.gone})`)
    const oldValue = scan.index.get(rec.path)
    scan.index.delete(rec.path)
    if (oldValue !== undefined) {
      scan.deleted.push(rec.path)
      scan.previous.set(rec.path, entryFromIndex(rec.path, oldValue))
    }
    return null
  }
  const st = r.stat
  const mode = Number(st.mode & 0o7777n) & CARRIED_MODE_BITS
  const sha256 = createHash('sha256').update(r.data).digest('hex')
  const value = indexValue(statSigOf('f', mode, r.data.length, st.mtimeNs, st.ctimeNs, st.ino.toString()), sha256)
  const racy = st.mtimeNs >= scan.scanStartNs - RACY_WINDOW_NS || st.ctimeNs >= scan.scanStartNs - RACY_WINDOW_NS
  scan.index.set(rec.path, racy ? racyValue(value) : value)
  return { entry: { type: 'f', path: rec.path, mode, size: r.data.length, sha256 }, data: r.data }
}

export function sameEntry(a: TreeEntry, b: TreeEntry): boolean {
  if (a.type !== b.type) return false
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

