import type { FileHandle } from 'node:fs/promises'
import { SnapshotError } from '../core/errors.js'
import type { TreeEntry } from '../core/tree-entry.js'
import { writeStreamAtomic } from '../fs/durable.js'
import { sizeOfSig } from '../fs/stat-signature.js'
import type { RawScanRecord } from '../fs/tree-scan.js'
import { addCounts, encodeIndexHeader, entryFromIndex, indexValue, rowBytes, TYPE_F, writeRow, type TreeCounts } from './index-row.js'
import { IndexRows } from './index-rows.js'
import { FilesToRead } from './files-to-read.js'

/**
 * The index of the tree being built (the rows' format: index-row.ts): made by one scan from the
 * previous index (index-rows.ts), carrying unchanged rows over as bytes, and written durably.
 * Rows are in the order of the scan that wrote them, which is the order the next scan meets them
 * in (readdir order, stable while a directory is unchanged): the scan walks the previous rows with
 * a cursor, and only an entry that is not the next row is looked up, by the hash of its path.
 */

/** Entries by number, decoded on demand. */
export interface EntryList {
  readonly length: number
  path(n: number): string
  value(n: number): string
  isDir(n: number): boolean
}

/**
 * A new or changed entry of the next index, known from the scan alone (a directory or symlink; a
 * file with its sha256 in hex in tests): its stat signature and payload (the link target, or ''),
 * kept apart so that nothing is concatenated per entry. Files to read are rows of FilesToRead
 * instead (an object each cost too much: files-to-read.ts).
 */
export class IndexSlot {
  constructor(
    readonly path: string,
    readonly sig: string,
    readonly payload: string,
  ) {}
}

const UNSEEN = 0
const CARRIED = 1
const TAKEN = 2

/**
 * The index of the tree being built, made by one scan from the previous index: for each scan
 * record in order, either a row of the previous index carried over as it is (`carryNextIfSame`,
 * `carry`), or a slot for an entry that is new or changed. Rows that no scan record took are the
 * deleted entries (`finish`).
 */
export class MasterIndex {
  /**
   * The next index in order: slots, files to read as one negative number, -(k + 1) for row k of
   * `files`, and runs of previous rows carried over as two numbers, `from` and `to` (exclusive). A
   * run is an object less: the delta's changes cut the rows into as many runs as there are changes.
   */
  private readonly parts: (number | IndexSlot)[] = []
  /** New files, and files whose stat signature moved: read before the index is written. */
  readonly files = new FilesToRead()
  private readonly state: Uint8Array
  /** The previous rows not carried over, counted as they are taken (see counts). */
  private readonly dropped: TreeCounts = { files: 0, dirs: 0, links: 0, bytes: 0 }
  private cursor = 0
  private finished = false

  constructor(private readonly previous: IndexRows = IndexRows.empty()) {
    this.state = new Uint8Array(previous.length)
  }

  /**
   * The common case, and so the fast path: the scan record is, byte for byte, the previous row
   * after the last one taken. Carries that row over and returns true.
   */
  carryNextIfSame(raw: RawScanRecord): boolean {
    const i = this.cursor
    if (i >= this.state.length || !this.previous.isRecord(i, raw)) return false
    this.cursor = i + 1
    this.carry(i)
    return true
  }

  /**
   * The previous row of this record's path, marked as taken (or -1): the next row, or one found by
   * its path hash elsewhere. A row found ahead moves the cursor past it; the rows skipped are found
   * by their own records later, or are deleted.
   */
  take(raw: RawScanRecord): number {
    let i = this.cursor < this.state.length && this.previous.hasPath(this.cursor, raw) ? this.cursor : -1
    if (i < 0) i = this.previous.find(raw)
    if (i < 0 || this.state[i] !== UNSEEN) return -1 // a path met twice: impossible in one scan, but never carried twice
    this.state[i] = TAKEN
    this.previous.count(i, this.dropped, 1)
    if (i >= this.cursor) this.cursor = i + 1
    return i
  }

  /** Carries previous row `i` over unchanged, at this point of the scan. */
  carry(i: number): void {
    if (this.state[i] === TAKEN) this.previous.count(i, this.dropped, -1)
    this.state[i] = CARRIED
    const parts = this.parts
    const last = parts.length - 1
    if (last >= 0 && parts[last] === i) parts[last] = i + 1 // a number last is a run's `to`
    else parts.push(i, i + 1)
  }

  isRecord(i: number, raw: RawScanRecord): boolean {
    return this.previous.isRecord(i, raw)
  }

  previousValue(i: number): string {
    return this.previous.value(i)
  }

  /** The entry file `k`'s path had in the previous index, if any. */
  previousEntry(k: number): TreeEntry | undefined {
    const row = this.files.previousRow(k)
    return row < 0 ? undefined : entryFromIndex(this.files.path(k), this.previous.value(row))
  }

  /** A new or changed directory or symlink, at this point of the scan. */
  add(slot: IndexSlot): void {
    this.parts.push(slot)
  }

  /** A file to read, at this point of the scan: its previous row stands for it until it is read. */
  addFile(path: string, scanSig: string, previousRow: number): number {
    const k = this.files.add(path, scanSig, previousRow)
    this.parts.push(-(k + 1))
    return k
  }

  /** Ends the scan: the paths and values of the previous rows that no record took, i.e. deleted. */
  finish(): [string, string][] {
    this.finished = true
    const deleted: [string, string][] = []
    for (let i = 0; i < this.state.length; i++) {
      if (this.state[i] !== UNSEEN) continue
      deleted.push([this.previous.path(i, true), this.previous.value(i, true)]) // one pass through the file, in order
      this.previous.count(i, this.dropped, 1, true)
    }
    this.previous.endScan()
    return deleted
  }

  /** The tree's counts: the previous ones, less the rows not carried over, plus the slots. */
  counts(): TreeCounts {
    if (!this.finished) throw new SnapshotError('internal: index counts asked before the scan finished')
    const p = this.previous.counts
    const d = this.dropped
    const counts = { files: p.files - d.files, dirs: p.dirs - d.dirs, links: p.links - d.links, bytes: p.bytes - d.bytes }
    const files = this.files
    const parts = this.parts
    for (let p = 0; p < parts.length; p++) {
      const part = parts[p]!
      if (typeof part !== 'number') {
        const type = part.sig.charCodeAt(0)
        addCounts(counts, type, type === TYPE_F ? sizeOfSig(part.sig) : 0, 1)
      } else if (part >= 0) {
        p++ // a run: counted with the previous rows
      } else {
        const k = -part - 1
        if (files.isFilled(k)) addCounts(counts, TYPE_F, sizeOfSig(files.sig(k)), 1)
        else if (files.standIn(k) >= 0) this.previous.count(files.standIn(k), counts, 1)
      }
    }
    return counts
  }

  /**
   * Every entry, in scan order, by number: path and value are decoded only when asked, so a full
   * archive can order a million entries (path-order.ts) holding two numbers for each.
   */
  entryList(): EntryList {
    this.previous.readAcross() // a full build decodes every row in path order (index-rows.ts)
    const refs: number[] = [] // >= 0: a previous row; < 0: -(j + 1) for news[j]
    const news: (IndexSlot | number)[] = [] // a slot, or a filled file's row number in `files`
    const files = this.files
    const parts = this.parts
    for (let p = 0; p < parts.length; p++) {
      const part = parts[p]!
      if (typeof part !== 'number') refs.push(-news.push(part))
      else if (part >= 0) {
        for (let i = part, to = parts[++p] as number; i < to; i++) refs.push(i)
      } else {
        const k = -part - 1
        if (files.isFilled(k)) refs.push(-news.push(k))
        else if (files.standIn(k) >= 0) refs.push(files.standIn(k))
      }
    }
    const previous = this.previous
    return {
      length: refs.length,
      path: (n) => {
        const ref = refs[n]!
        if (ref >= 0) return previous.path(ref)
        const item = news[-ref - 1]!
        return typeof item === 'number' ? files.path(item) : item.path
      },
      value: (n) => {
        const ref = refs[n]!
        if (ref >= 0) return previous.value(ref)
        const item = news[-ref - 1]!
        return typeof item === 'number' ? indexValue(files.sig(item), files.sha256(item)) : indexValue(item.sig, item.payload)
      },
      isDir: (n) => {
        const ref = refs[n]!
        if (ref >= 0) return previous.isDir(ref)
        const item = news[-ref - 1]!
        return typeof item !== 'number' && item.sig.startsWith('d ')
      },
    }
  }

  /** Writes the index durably: unchanged rows are copied from the previous file as they are, slots encoded. */
  async write(file: string, id: number): Promise<void> {
    const c = this.counts()
    const previous = this.previous
    await writeStreamAtomic(file, async (handle) => {
      const out = new IndexOutput(handle)
      out.text(encodeIndexHeader(id, c))
      const parts = this.parts
      const files = this.files
      for (let p = 0; p < parts.length; p++) {
        const part = parts[p]!
        if (typeof part !== 'number') {
          if (out.full(rowBytes(part.path, part.sig, part.payload))) await out.flush()
          out.row(part.path, part.sig, part.payload)
        } else if (part >= 0) {
          const to = parts[++p] as number
          if (!out.rowsIfRoom(previous, part, to)) await out.rows(previous, part, to)
        } else {
          const k = -part - 1
          if (files.isFilled(k)) {
            const [path, sig, sha256] = [files.path(k), files.sig(k), files.sha256(k)]
            if (out.full(rowBytes(path, sig, sha256))) await out.flush()
            out.row(path, sig, sha256)
          } else {
            const row = files.standIn(k)
            if (row >= 0 && !out.rowsIfRoom(previous, row, row + 1)) await out.rows(previous, row, row + 1)
          }
        }
      }
      await out.flush()
      return { result: undefined }
    })
  }
}

export async function writeAll(handle: FileHandle, b: Buffer): Promise<void> {
  for (let done = 0; done < b.length; ) done += (await handle.write(b, done, b.length - done)).bytesWritten
}

const CHUNK = 1 << 20 // ~145 writes for an index of 1M files; the buffer is part of a delta build's peak memory

/**
 * The next index's bytes, gathered in one buffer written 1 MiB at a time: rows carried over
 * are read from the previous file straight into it, so neither file is ever held whole.
 */
class IndexOutput {
  private readonly chunk = Buffer.allocUnsafe(CHUNK)
  private used = 0

  constructor(private readonly handle: FileHandle) {}

  text(s: string): void {
    this.used += this.chunk.write(s, this.used, 'latin1')
  }

  /** Whether `n` more bytes need a flush first (a row is far smaller than the buffer). */
  full(n: number): boolean {
    return this.used + n > CHUNK
  }

  /** One row (see the module comment); `full` said there is room. */
  row(path: string, sig: string, payload: string): void {
    this.used = writeRow(this.chunk, this.used, path, sig, payload)
  }

  /** Rows `from` to `to` of the previous index if they fit without a flush (most runs): no promise. */
  rowsIfRoom(previous: IndexRows, from: number, to: number): boolean {
    const [position, end] = previous.byteRange(from, to)
    if (this.full(end - position)) return false
    previous.readBytes(this.chunk, this.used, end - position, position)
    this.used += end - position
    return true
  }

  /** Rows `from` to `to` (exclusive) of the previous index, as they are. */
  async rows(previous: IndexRows, from: number, to: number): Promise<void> {
    let [position, end] = previous.byteRange(from, to)
    while (position < end) {
      if (this.used === CHUNK) await this.flush()
      const n = Math.min(end - position, CHUNK - this.used)
      previous.readBytes(this.chunk, this.used, n, position)
      this.used += n
      position += n
    }
  }

  async flush(): Promise<void> {
    await writeAll(this.handle, this.chunk.subarray(0, this.used))
    this.used = 0
  }
}
