import { createHash } from 'node:crypto'
import { join } from 'node:path'
import type { TreeEntry } from '../core/tree-entry.js'
import { linkTargetProblem, pathProblem } from '../core/tree-path.js'
import { FileChangingError, readFileStable } from '../fs/stable-read.js'
import { scanTree, statSigOf, type ScanRecord } from '../fs/tree-scan.js'
import { entryFromIndex, indexValue, racyValue, sigOf, type MasterIndex } from './master-index.js'

/**
 * Compares the source tree with the previous index and reads only what changed. The result is
 * the new index, the entries that differ from the previous snapshot, and the paths that are gone.
 * Cost: one metadata scan of the tree, plus a read and hash of each file whose stat signature
 * changed.
 */
export interface TreeChanges {
  readonly index: MasterIndex
  /** Entries new or different since the previous snapshot, by path. */
  readonly changed: Map<string, TreeEntry>
  /** Previous entries of changed or deleted paths, for the digest. */
  readonly previous: Map<string, TreeEntry>
  readonly deleted: string[]
  readonly filesRead: number
  /** Bytes of files read, kept so packing needs no second read (dropped past a budget). */
  readonly contents: Map<string, Buffer>
  readonly warnings: string[]
}

/** Files modified this close to the scan may change again within the clock's granularity. */
const RACY_WINDOW_NS = 2_000_000_000n
const CONTENT_BUDGET = 64 << 20

export async function scanChanges(source: string, previousIndex: MasterIndex): Promise<TreeChanges> {
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
      if (oldValue !== undefined && sigOf(oldValue) === rec.statSig) index.set(rec.path, oldValue)
      else {
        toRead.push(rec)
        if (oldValue !== undefined) index.set(rec.path, oldValue) // until read: keeps its place
      }
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

  // Whatever the scan did not meet is gone. Dropped entries of skipped paths count as deleted too.
  const deleted: string[] = []
  for (const [path, value] of old) {
    deleted.push(path)
    previous.set(path, entryFromIndex(path, value))
  }

  const contents = new Map<string, Buffer>()
  let kept = 0
  let filesRead = 0
  for (const rec of toRead) {
    let read
    try {
      read = readFileStable(join(source, rec.path))
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'EISDIR' || err instanceof FileChangingError) {
        // Replaced or removed after the scan: this snapshot does not carry it; the next one will.
        warnings.push(`skipped ${JSON.stringify(rec.path)}: it changed during the build (${code ?? (err as Error).message})`)
        const oldValue = index.get(rec.path)
        index.delete(rec.path)
        if (oldValue !== undefined) {
          deleted.push(rec.path)
          previous.set(rec.path, entryFromIndex(rec.path, oldValue))
        }
        continue
      }
      throw err
    }
    filesRead++
    const st = read.stat
    const mode = Number(st.mode & 0o7777n)
    const sha256 = createHash('sha256').update(read.data).digest('hex')
    const sig = statSigOf('f', mode, read.data.length, st.mtimeNs, st.ctimeNs, st.ino.toString())
    const racy = st.mtimeNs >= scanStartNs - RACY_WINDOW_NS || st.ctimeNs >= scanStartNs - RACY_WINDOW_NS
    const value = indexValue(sig, sha256)
    const oldValue = index.get(rec.path)
    index.set(rec.path, racy ? racyValue(value) : value)
    const entry: TreeEntry = { type: 'f', path: rec.path, mode, size: read.data.length, sha256 }
    const before = oldValue === undefined ? previous.get(rec.path) : entryFromIndex(rec.path, oldValue)
    if (!before || !sameEntry(before, entry)) {
      changed.set(rec.path, entry)
      if (before) previous.set(rec.path, before)
      if (kept + read.data.length <= CONTENT_BUDGET) {
        contents.set(rec.path, read.data)
        kept += read.data.length
      }
    }
  }
  // A path that was a directory before and is a file now (or back) is "changed", not deleted.
  return { index, changed, previous, deleted: deleted.filter((p) => !index.has(p)), filesRead, contents, warnings }
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
