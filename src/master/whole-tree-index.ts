import { closeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import type { TreeEntry } from '../core/tree-entry.js'
import { writeStreamAtomic } from '../fs/durable.js'
import { openScratchFile, readAt, writeAt } from '../fs/scratch-file.js'
import { sizeOfSig } from '../fs/stat-signature.js'
import type { RawScanRecord } from '../fs/tree-scan.js'
import { encodeIndexHeader, ROW_HEAD, rowBytes, rowEntryAt, rowHashAt, rowPathAt, rowSigAt, rowValueAt, SHA_BYTES, TYPE_D, TYPE_F, writeRecordRow, writeRow, type TreeCounts } from './index-row.js'
import { writeAll, type EntryList } from './master-index.js'

/**
 * The index of a first build (no previous index), made straight from the scan: every entry's row
 * of the index format (index-row.ts), in scan order, with the files' hashes left blank until the
 * full archive reads them.
 *
 * The rows wait in a file of their own, not in memory: held in buffers they were the bulk of a
 * first build's peak (~145 MB at 1M files, 381 MiB of peak RSS; BENCHMARKS.md, "Full builds in
 * path order, a directory at a time"). The file is in the store (a /tmp on tmpfs would be memory
 * again), unlinked as soon as it is opened (scratch-file.ts). Rows are appended through a 1 MiB
 * buffer during the scan; afterwards the archive reads them in path order (path-order.ts), a
 * directory's rows together in the file, through one window of WINDOW bytes around the row wanted.
 * A file's hash is written into the window, which goes back to the file before it moves. What
 * stays in memory per entry: its row's offset (8 bytes).
 *
 * The rare file that moved between scan and read is recorded beside the rows: a new signature
 * (the row is re-encoded when written) or a drop (left out).
 */
const OUT_BYTES = 1 << 20
const WINDOW = 256 << 10 // rows are < 66 KiB (a u16 record length)
const STARTS_SHIFT = 16 // row offsets in blocks of 65,536: no array copied as the rows grow

export class WholeTreeIndex implements EntryList {
  private fd = -1
  private out: Buffer | null = Buffer.allocUnsafe(OUT_BYTES)
  private outUsed = 0
  /** The rows' bytes so far, in the file and in `out`. */
  private size = 0
  private readonly starts: Float64Array[] = []
  private rows = 0
  private readonly window = Buffer.allocUnsafe(WINDOW)
  private windowFrom = 0
  private windowTo = 0
  /** The window holds hashes the file does not have yet. */
  private dirty = false
  private readonly newSigs = new Map<number, string>() // files whose read found another signature, or a racy one
  private readonly dropped = new Set<number>()
  private readonly tally: TreeCounts = { files: 0, dirs: 0, links: 0, bytes: 0 }

  constructor(private readonly spillDir: string = tmpdir()) {}

  get length(): number {
    return this.rows
  }

  /** Appends a scan record as the next row; a file's hash is blank until `fillFile`. */
  add(raw: RawScanRecord, sig: string): void {
    const rowLength = ROW_HEAD + (raw.end - raw.start) + (raw.buf[raw.start] === TYPE_F ? SHA_BYTES : 0)
    if (this.out === null) throw new Error('internal: a row added to a first build\'s index after it was read')
    if (this.outUsed + rowLength > OUT_BYTES) this.flushOut()
    const n = this.rows++
    if ((n >>> STARTS_SHIFT) === this.starts.length) this.starts.push(new Float64Array(1 << STARTS_SHIFT))
    this.starts[n >>> STARTS_SHIFT]![n & ((1 << STARTS_SHIFT) - 1)] = this.size
    this.outUsed = writeRecordRow(this.out, this.outUsed, raw)
    this.size += rowLength
    const type = raw.buf[raw.start]!
    if (type === TYPE_F) {
      this.tally.files++
      this.tally.bytes += sizeOfSig(sig)
    } else if (type === TYPE_D) this.tally.dirs++
    else this.tally.links++
  }

  isDir(n: number): boolean {
    const [buf, at] = this.locate(n)
    return buf[at + ROW_HEAD] === TYPE_D
  }

  type(n: number): 'f' | 'd' | 'l' {
    const [buf, at] = this.locate(n)
    return String.fromCharCode(buf[at + ROW_HEAD]!) as 'f' | 'd' | 'l'
  }

  path(n: number): string {
    return rowPathAt(...this.locate(n))
  }

  /** The scan's stat signature of entry `n`. */
  sig(n: number): string {
    return rowSigAt(...this.locate(n))
  }

  /** A directory's or symlink's entry, straight from its row. */
  entry(n: number): Exclude<TreeEntry, { type: 'f' }> {
    return rowEntryAt(...this.locate(n))
  }

  value(n: number): string {
    const [buf, at] = this.locate(n)
    return rowValueAt(buf, at, this.newSigs.get(n))
  }

  /** A file as read: its hash, and its signature for the index if not the scan's (readSourceFile). */
  fillFile(n: number, sha256Hex: string, sig: string): void {
    const [buf, at] = this.locate(n)
    buf.write(sha256Hex, rowHashAt(buf, at), 'hex')
    this.dirty = true
    const scanned = this.sig(n)
    if (sig === scanned) return
    this.newSigs.set(n, sig)
    this.tally.bytes += sizeOfSig(sig) - sizeOfSig(scanned)
  }

  /** A file that vanished or changed kind before it was read: left out of the index. */
  dropFile(n: number): void {
    if (this.dropped.has(n)) return
    this.dropped.add(n)
    this.tally.files--
    this.tally.bytes -= sizeOfSig(this.sig(n)) // never filled: the scan's size is the one counted
  }

  counts(): TreeCounts {
    return { ...this.tally }
  }

  /** Writes the index durably: rows copied from the rows' file a window at a time, the few exceptions re-encoded. */
  async write(file: string, id: number): Promise<void> {
    this.settle()
    const special = [...new Set([...this.newSigs.keys(), ...this.dropped])].sort((a, b) => a - b)
    await writeStreamAtomic(file, async (handle) => {
      await writeAll(handle, Buffer.from(encodeIndexHeader(id, this.tally)))
      let from = 0
      for (const n of [...special, this.rows]) {
        await this.copyRows(from, n, (bytes) => writeAll(handle, bytes))
        if (n < this.rows && !this.dropped.has(n)) {
          const [buf, at] = this.locate(n)
          const hashAt = rowHashAt(buf, at)
          const [path, sig, sha] = [this.path(n), this.newSigs.get(n)!, buf.toString('hex', hashAt, hashAt + SHA_BYTES)]
          const row = Buffer.allocUnsafe(rowBytes(path, sig, sha))
          await writeAll(handle, row.subarray(0, writeRow(row, 0, path, sig, sha)))
        }
        from = n + 1
      }
      return { result: undefined }
    })
  }

  /** Lets the rows' file go (its pages with it). */
  close(): void {
    if (this.fd >= 0) closeSync(this.fd)
    this.fd = -1
    this.out = null
  }

  private start(n: number): number {
    return n === this.rows ? this.size : this.starts[n >>> STARTS_SHIFT]![n & ((1 << STARTS_SHIFT) - 1)]!
  }

  /** The bytes of rows `from` to `to` (exclusive), a window at a time. */
  private async copyRows(from: number, to: number, write: (bytes: Buffer) => Promise<void>): Promise<void> {
    const end = this.start(to)
    for (let at = this.start(from); at < end; ) {
      const n = Math.min(WINDOW, end - at)
      this.readAt(at)
      await write(this.window.subarray(0, n))
      at += n
    }
  }

  private flushOut(): void {
    if (this.fd < 0) this.fd = openScratchFile(this.spillDir, 'index-rows')
    writeAt(this.fd, this.out!, this.outUsed, this.size - this.outUsed)
    this.outUsed = 0
  }

  /** The scan is over: every row to the file, the append buffer let go, the window's hashes written. */
  private settle(): void {
    if (this.out !== null) {
      if (this.outUsed > 0) this.flushOut()
      this.out = null
    }
    if (this.dirty) {
      writeAt(this.fd, this.window, this.windowTo - this.windowFrom, this.windowFrom)
      this.dirty = false
    }
  }

  /** The window at the file's bytes from `from` on (as many as it holds), after its hashes went back to the file. */
  private readAt(from: number): void {
    this.settle()
    const n = Math.min(WINDOW, this.size - from)
    readAt(this.fd, this.window, n, from, "a first build's rows' file")
    this.windowFrom = from
    this.windowTo = from + n
  }

  /** Row `n` in the window; a row out of it brings the window to it, a quarter of it before (a directory's rows on both sides). */
  private locate(n: number): [Buffer, number] {
    const start = this.start(n)
    const end = this.start(n + 1)
    if (this.out !== null || start < this.windowFrom || end > this.windowTo) this.readAt(Math.max(0, Math.min(start - WINDOW / 4, this.size - WINDOW)))
    return [this.window, start - this.windowFrom]
  }
}
