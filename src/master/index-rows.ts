import { readFile } from 'node:fs/promises'
import { IndexVersionError, SnapshotError } from '../core/errors.js'
import type { RawScanRecord } from '../fs/tree-scan.js'
import { addCounts, fnv1a, HEADER, INDEX_VERSION, MAGIC, ROW_HEAD, rowFileSizeAt, rowLength, rowPathAt, rowPathHashAt, rowRecordLength, rowValueAt, type TreeCounts } from './index-row.js'

/**
 * The previous build's index, as loaded: its rows in one buffer, found by position (the scan's
 * cursor) or by path hash. Rows are compared with scan records as bytes (index-row.ts has the
 * format); nothing is decoded for an unchanged entry.
 */

/** The rows of an index file, as loaded: read-only. Row `i` is `buf[starts[i], starts[i + 1])`. */
export class IndexRows {
  private table: Int32Array | null = null // open addressing, path hash -> row; built on first use

  private constructor(
    readonly id: number,
    private readonly buf: Buffer,
    private readonly starts: Float64Array,
    readonly counts: Readonly<TreeCounts>,
  ) {}

  static empty(): IndexRows {
    return new IndexRows(0, Buffer.alloc(0), new Float64Array(1), { files: 0, dirs: 0, links: 0, bytes: 0 })
  }

  static parse(file: string, buf: Buffer): IndexRows {
    const nl = buf.indexOf(10)
    const head = buf.toString('latin1', 0, nl < 0 ? Math.min(buf.length, 200) : nl).split(' ')
    if (!head[0]?.startsWith(MAGIC)) throw new SnapshotError(`${file} is not a snapshot index`)
    if (head[0] !== HEADER) throw new IndexVersionError(`${file} has index format ${head[0].slice(MAGIC.length)}, this version reads ${INDEX_VERSION}`)
    const numbers = head.slice(1).map(Number)
    const [id, rows, files, dirs, links, bytes] = numbers as [number, number, number, number, number, number]
    if (nl < 0 || numbers.length !== 6 || !numbers.every((n) => Number.isSafeInteger(n) && n >= 0)) throw new SnapshotError(`${file} has a damaged header`)
    const starts = new Float64Array(rows + 1)
    let p = nl + 1
    let i = 0
    for (; i < rows && p + ROW_HEAD < buf.length; i++) {
      starts[i] = p
      p += rowLength(buf, p)
    }
    if (i !== rows || p !== buf.length) throw new SnapshotError(`${file} is truncated or damaged (${i} of ${rows} rows)`)
    starts[i] = p
    return new IndexRows(id, buf, starts, { files, dirs, links, bytes })
  }

  get length(): number {
    return this.starts.length - 1
  }

  /** Whether row `i` holds exactly this scan record: same path, stat signature and link target. */
  isRecord(i: number, raw: RawScanRecord): boolean {
    const at = this.starts[i]!
    const len = raw.end - raw.start
    return rowRecordLength(this.buf, at) === len && raw.buf.compare(this.buf, at + ROW_HEAD, at + ROW_HEAD + len, raw.start, raw.end) === 0
  }

  /** Whether row `i` is this scan record's path. */
  hasPath(i: number, raw: RawScanRecord): boolean {
    const pathStart = this.buf.indexOf(0, this.starts[i]! + ROW_HEAD) + 1
    const pathEnd = pathStart + (raw.targetStart - 1 - raw.pathStart)
    return this.buf[pathEnd] === 0 && raw.buf.compare(this.buf, pathStart, pathEnd, raw.pathStart, raw.targetStart - 1) === 0
  }

  /** The row of this scan record's path, or -1. */
  find(raw: RawScanRecord): number {
    const table = (this.table ??= this.buildTable())
    const mask = table.length - 1
    const h = fnv1a(raw.buf, raw.pathStart, raw.targetStart - 1)
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const i = table[slot]!
      if (i < 0) return -1
      if (rowPathHashAt(this.buf, this.starts[i]!) === h && this.hasPath(i, raw)) return i
    }
  }

  private buildTable(): Int32Array {
    let size = 16
    while (size < 2 * this.length) size *= 2
    const table = new Int32Array(size).fill(-1)
    const mask = size - 1
    for (let i = 0; i < this.length; i++) {
      let slot = rowPathHashAt(this.buf, this.starts[i]!) & mask
      while (table[slot] !== -1) slot = (slot + 1) & mask
      table[slot] = i
    }
    return table
  }

  path(i: number): string {
    return rowPathAt(this.buf, this.starts[i]!)
  }

  value(i: number): string {
    return rowValueAt(this.buf, this.starts[i]!)
  }

  /** Adds (or subtracts) row `i`'s entry to a tree's counts, straight from its bytes. */
  count(i: number, counts: TreeCounts, sign: 1 | -1): void {
    const at = this.starts[i]!
    addCounts(counts, this.buf[at + ROW_HEAD]!, rowFileSizeAt(this.buf, at), sign)
  }

  /** Every row as path and value, in order. */
  *entries(): Generator<[string, string]> {
    for (let i = 0; i < this.length; i++) yield [this.path(i), this.value(i)]
  }

  /** The bytes of rows `from` to `to` (exclusive), for a copy into the next index. */
  bytes(from: number, to: number): Buffer {
    return this.buf.subarray(this.starts[from]!, this.starts[to]!)
  }
}

/** Loads an index file. Throws IndexVersionError for an index of another version. */
export async function readIndex(file: string): Promise<IndexRows> {
  return IndexRows.parse(file, await readFile(file))
}
