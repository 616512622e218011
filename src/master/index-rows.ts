import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { IndexVersionError, SnapshotError } from '../core/errors.js'
import type { RawScanRecord } from '../fs/tree-scan.js'
import { addCounts, fnv1a, HEADER, INDEX_VERSION, MAGIC, ROW_HEAD, rowFileSizeAt, rowLength, rowPathAt, rowRecordLength, rowValueAt, TYPE_D, type TreeCounts } from './index-row.js'

/**
 * The previous build's index, read from its file as the build goes rather than held: its rows are
 * found by position (the scan's cursor) or by path hash, and compared with scan records as bytes
 * (index-row.ts has the format); nothing is decoded for an unchanged entry.
 *
 * A delta build meets every row, so what the index costs per row is what makes a build's memory
 * follow the tree. Held whole it was ~145 bytes a row (458 MiB of peak RSS at 1M files); here a
 * row costs ~15 bytes of typed arrays (BENCHMARKS.md, "Delta build memory"):
 * - its start in the file, 4 bytes (a u32 offset within a block of 256 rows, plus 8 bytes a block);
 * - its path hash, 4 bytes, and 6 in the lookup table built on the first lookup (2/3 full at most),
 *   both let go when the scan ends (endScan);
 * - and 1 byte of the build's own state (master-index.ts).
 * The rows themselves are read through two windows: one that moves forward with the scan (the
 * rows come in the order the previous scan wrote them, which is the order this one meets them in),
 * and a small one for a row met out of order. The file is opened once, and the descriptor kept
 * until `close`: the next index may replace the file meanwhile (same id: an index of signatures
 * only), and the rows read are still the previous ones.
 */

const BLOCK_SHIFT = 8 // 256 rows a block: at most 256 * (64 KiB + 38) bytes, within a u32 offset
const SCAN_WINDOW = 1 << 20 // rows in the scan's order: ~7,000 rows a read
const NEAR_WINDOW = 4 << 10 // a row met out of order, and the few after it (a reordered directory)
const WIDE_WINDOW = 256 << 10 // rows read in path order (readAcross): a few directories' rows a read
const LOAD_CHUNK = 1 << 20

/** A range of the file held in memory: bytes `[from, to)` of the file are `buf[0, to - from)`. */
class Window {
  from = 0
  to = 0
  constructor(public buf: Buffer) {}

  holds(start: number, end: number): boolean {
    return start >= this.from && end <= this.to
  }

  /** Reads from `start` on, as much as the window holds (at least up to `end`). */
  load(fd: number, start: number, end: number, fileSize: number): void {
    if (end - start > this.buf.length) this.buf = Buffer.allocUnsafe(end - start)
    const n = Math.min(this.buf.length, fileSize - start)
    readFully(fd, this.buf, 0, n, start)
    this.from = start
    this.to = start + n
  }
}

function readFully(fd: number, buf: Buffer, offset: number, length: number, position: number): void {
  for (let done = 0; done < length; ) {
    const n = readSync(fd, buf, offset + done, length - done, position + done)
    if (n === 0) throw new SnapshotError('internal: the index file is shorter than when it was opened')
    done += n
  }
}

/** Row starts: a u32 offset within a block of 256 rows, and each block's start in the file. */
class RowStarts {
  readonly blocks: Float64Array
  readonly offsets: Uint32Array

  constructor(rows: number) {
    this.blocks = new Float64Array((rows >>> BLOCK_SHIFT) + 1)
    this.offsets = new Uint32Array(rows + 1)
  }

  set(i: number, at: number): void {
    if ((i & ((1 << BLOCK_SHIFT) - 1)) === 0) this.blocks[i >>> BLOCK_SHIFT] = at
    this.offsets[i] = at - this.blocks[i >>> BLOCK_SHIFT]!
  }

  get(i: number): number {
    return this.blocks[i >>> BLOCK_SHIFT]! + this.offsets[i]!
  }
}

/**
 * Slots of the path lookup table: 1.5 per row (linear probing at most 2/3 full, ~5 probes for a
 * path that is not there, each a compare of two numbers). A power of two at twice the rows was
 * 8 MiB at 1M rows and 16 MiB past 1,048,576; this is 6 MiB, and grows with the rows.
 */
export function tableSize(rows: number): number {
  return Math.max(16, Math.ceil(rows * 1.5))
}

/** A hash's first slot: its share of 2^32 scaled to the table, which need not be a power of two. */
export function homeSlot(hash: number, size: number): number {
  return Math.floor((hash / 4294967296) * size)
}

/** The rows of an index file: read-only. Row `i` is the file's bytes `[start(i), start(i + 1))`. */
export class IndexRows {
  readonly length: number
  private table: Int32Array | null = null // open addressing, path hash -> row; built on first use
  private readonly scanWindow = new Window(Buffer.alloc(0))
  private readonly nearWindow = new Window(Buffer.alloc(0))
  /** The buffer the last `locate` found its row in. */
  private b: Buffer = Buffer.alloc(0)
  /** After the scan, rows are wanted in no order: none moves the scan's window (see `locate`). */
  private scanning = true
  /** Rows wanted in path order, every one (readAcross). */
  private wide = false

  private constructor(
    readonly id: number,
    private fd: number,
    private readonly fileSize: number,
    private readonly starts: RowStarts,
    /** Each row's path hash, until the scan ends (see endScan). */
    private hashes: Uint32Array,
    readonly counts: Readonly<TreeCounts>,
    /** The whole file, when held: an empty index's. */
    private whole: Buffer | null,
  ) {
    this.length = hashes.length
  }

  static empty(): IndexRows {
    return new IndexRows(0, -1, 0, new RowStarts(0), new Uint32Array(0), { files: 0, dirs: 0, links: 0, bytes: 0 }, Buffer.alloc(0))
  }

  /** Opens an index file and reads it once through, for its row starts and path hashes. */
  static open(file: string): IndexRows {
    const fd = openSync(file, 'r')
    try {
      const size = fstatSync(fd).size
      let buf = Buffer.allocUnsafe(Math.min(LOAD_CHUNK, size))
      readFully(fd, buf, 0, buf.length, 0)
      const nl = buf.indexOf(10)
      const head = buf.toString('latin1', 0, nl < 0 ? Math.min(buf.length, 200) : nl).split(' ')
      if (!head[0]?.startsWith(MAGIC)) throw new SnapshotError(`${file} is not a snapshot index`)
      if (head[0] !== HEADER) throw new IndexVersionError(`${file} has index format ${head[0].slice(MAGIC.length)}, this version reads ${INDEX_VERSION}`)
      const numbers = head.slice(1).map(Number)
      const [id, rows, files, dirs, links, bytes] = numbers as [number, number, number, number, number, number]
      if (nl < 0 || numbers.length !== 6 || !numbers.every((n) => Number.isSafeInteger(n) && n >= 0)) throw new SnapshotError(`${file} has a damaged header`)
      if (rows > size) throw new SnapshotError(`${file} is truncated or damaged (${rows} rows in ${size} bytes)`)
      const starts = new RowStarts(rows)
      const hashes = new Uint32Array(rows)
      let bufFrom = 0 // the file offset of buf[0]
      let bufTo = buf.length
      let p = nl + 1
      let i = 0
      for (; i < rows && p + ROW_HEAD < size; i++) {
        if (p + ROW_HEAD + 1 > bufTo || p + rowLength(buf, p - bufFrom) > bufTo) {
          // The row runs past what is read: read on from its start (a row is < 66 KiB).
          if (buf.length < LOAD_CHUNK) buf = Buffer.allocUnsafe(LOAD_CHUNK)
          bufFrom = p
          bufTo = p + Math.min(LOAD_CHUNK, size - p)
          readFully(fd, buf, 0, bufTo - bufFrom, p)
        }
        const at = p - bufFrom
        starts.set(i, p)
        hashes[i] = (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0
        p += rowLength(buf, at)
      }
      if (i !== rows || p !== size) throw new SnapshotError(`${file} is truncated or damaged (${i} of ${rows} rows)`)
      starts.set(i, p)
      return new IndexRows(id, fd, size, starts, hashes, { files, dirs, links, bytes }, null)
    } catch (err) {
      closeSync(fd)
      throw err
    }
  }

  /** Lets the descriptor go; the rows can no longer be read. */
  close(): void {
    if (this.fd >= 0) closeSync(this.fd)
    this.fd = -1
  }

  /**
   * The scan is over: rows are wanted in no particular order from now on (the files a delta reads,
   * in path order), each read alone rather than moving the scan's window.
   */
  endScan(): void {
    this.scanning = false
    // Paths are looked up only while the scan runs: the hashes and their table (~10 bytes a row,
    // 10 MiB at 1M files) go before the delta is packed, which is when a build's memory peaks.
    this.table = null
    this.hashes = new Uint32Array(0)
  }

  /**
   * A full archive made from the index decodes every row once, in path order (path-order.ts): a
   * directory's rows lie together in the file, in the scan's order rather than by name, so from
   * now on a row out of the window is read with the rows around it (WIDE_WINDOW) rather than
   * alone. Such a build held the whole file before (~145 MB at 1M, BENCHMARKS.md, "Full builds
   * in path order, a directory at a time").
   */
  readAcross(): void {
    this.wide = true
  }

  /** Where row `i` is, in `this.b`: the scan's window while the scan moves forward, or `sequential`. */
  private locate(i: number, sequential = false): number {
    const start = this.starts.get(i)
    if (this.whole) {
      this.b = this.whole
      return start
    }
    const end = this.starts.get(i + 1)
    const s = this.scanWindow
    if (s.holds(start, end)) {
      this.b = s.buf
      return start - s.from
    }
    let w = this.nearWindow
    if (sequential || (this.scanning && start >= s.from)) w = s
    else if (w.holds(start, end)) {
      this.b = w.buf
      return start - w.from
    }
    const size = w === s ? SCAN_WINDOW : this.wide ? WIDE_WINDOW : NEAR_WINDOW
    if (w.buf.length < size) w.buf = Buffer.allocUnsafe(size)
    // Wide: a quarter of the window before the row, for the directory's rows on that side.
    w.load(this.fd, w === s || !this.wide ? start : Math.max(0, start - WIDE_WINDOW / 4), end, this.fileSize)
    this.b = w.buf
    return start - w.from
  }

  /** Whether row `i` holds exactly this scan record: same path, stat signature and link target. */
  isRecord(i: number, raw: RawScanRecord): boolean {
    const at = this.locate(i)
    const len = raw.end - raw.start
    return rowRecordLength(this.b, at) === len && raw.buf.compare(this.b, at + ROW_HEAD, at + ROW_HEAD + len, raw.start, raw.end) === 0
  }

  /** Whether row `i` is this scan record's path. */
  hasPath(i: number, raw: RawScanRecord): boolean {
    const at = this.locate(i)
    const pathStart = this.b.indexOf(0, at + ROW_HEAD) + 1
    const pathEnd = pathStart + (raw.targetStart - 1 - raw.pathStart)
    return this.b[pathEnd] === 0 && raw.buf.compare(this.b, pathStart, pathEnd, raw.pathStart, raw.targetStart - 1) === 0
  }

  /** The row of this scan record's path, or -1. */
  find(raw: RawScanRecord): number {
    if (!this.scanning) throw new SnapshotError('internal: an index row looked up by path after the scan')
    const table = (this.table ??= this.buildTable())
    const h = fnv1a(raw.buf, raw.pathStart, raw.targetStart - 1)
    for (let slot = homeSlot(h, table.length); ; slot = slot + 1 === table.length ? 0 : slot + 1) {
      const i = table[slot]!
      if (i < 0) return -1
      if (this.hashes[i] === h && this.hasPath(i, raw)) return i
    }
  }

  private buildTable(): Int32Array {
    const table = new Int32Array(tableSize(this.length)).fill(-1)
    for (let i = 0; i < this.length; i++) {
      let slot = homeSlot(this.hashes[i]!, table.length)
      while (table[slot] !== -1) slot = slot + 1 === table.length ? 0 : slot + 1
      table[slot] = i
    }
    return table
  }

  path(i: number, sequential = false): string {
    const at = this.locate(i, sequential) // first: it sets this.b
    return rowPathAt(this.b, at)
  }

  value(i: number, sequential = false): string {
    const at = this.locate(i, sequential)
    return rowValueAt(this.b, at)
  }

  /** Adds (or subtracts) row `i`'s entry to a tree's counts, straight from its bytes. */
  count(i: number, counts: TreeCounts, sign: 1 | -1, sequential = false): void {
    const at = this.locate(i, sequential)
    addCounts(counts, this.b[at + ROW_HEAD]!, rowFileSizeAt(this.b, at), sign)
  }

  /** Whether row `i` is a directory's. */
  isDir(i: number): boolean {
    const at = this.locate(i)
    return this.b[at + ROW_HEAD] === TYPE_D
  }

  /** Every row as path and value, in order. */
  *entries(): Generator<[string, string]> {
    for (let i = 0; i < this.length; i++) yield [this.path(i, true), this.value(i, true)]
  }

  /** Where rows `from` to `to` (exclusive) are in the file, for a copy into the next index. */
  byteRange(from: number, to: number): [number, number] {
    return [this.starts.get(from), this.starts.get(to)]
  }

  /**
   * Copies `length` bytes of the file from `position` into `buf` at `offset`, through the scan's
   * window: the next index copies runs of rows in about the order of the file, so it reads the
   * file once, a window at a time, not once per run.
   */
  readBytes(buf: Buffer, offset: number, length: number, position: number): void {
    if (this.whole) {
      this.whole.copy(buf, offset, position, position + length)
      return
    }
    const w = this.scanWindow
    while (length > 0) {
      if (!w.holds(position, position + 1)) {
        if (w.buf.length === 0) w.buf = Buffer.allocUnsafe(SCAN_WINDOW)
        w.load(this.fd, position, position + 1, this.fileSize)
      }
      const n = Math.min(length, w.to - position)
      w.buf.copy(buf, offset, position - w.from, position - w.from + n)
      offset += n
      position += n
      length -= n
    }
  }
}

/** Opens an index file. Throws IndexVersionError for an index of another version. */
export async function readIndex(file: string): Promise<IndexRows> {
  return IndexRows.open(file)
}
