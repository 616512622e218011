import type { TreeEntry } from '../core/tree-entry.js'
import { writeStreamAtomic } from '../fs/durable.js'
import { sizeOfSig } from '../fs/stat-signature.js'
import type { RawScanRecord } from '../fs/tree-scan.js'
import { encodeIndexHeader, ROW_HEAD, rowBytes, rowEntryAt, rowHashAt, rowPathAt, rowSigAt, rowValueAt, SHA_BYTES, TYPE_D, TYPE_F, writeRecordRow, writeRow, type TreeCounts } from './index-row.js'
import { writeAll, type EntryList } from './master-index.js'

/**
 * The index of a first build (no previous index), made straight from the scan: every entry's row
 * of the index format (index-row.ts), in scan order, appended to large buffers, with the files'
 * hashes left blank until the full archive reads them. A million entries cost their rows (~145
 * bytes each, outside the JS heap) and one number, not an object and three strings each.
 *
 * The rare file that moved between scan and read is recorded beside the rows: a new signature
 * (the row is re-encoded when written) or a drop (left out).
 */
const CHUNK = 16 << 20
const ADDRESS_SPLIT = 2 ** 32 // an address is chunk * 2^32 + offset

export class WholeTreeIndex implements EntryList {
  private readonly chunks: Buffer[] = [Buffer.allocUnsafe(CHUNK)]
  private readonly chunkUsed: number[] = [0]
  private readonly chunkFirstRow: number[] = [0] // a chunk's rows are contiguous
  private readonly addresses: number[] = []
  private readonly newSigs = new Map<number, string>() // files whose read found another signature, or a racy one
  private readonly dropped = new Set<number>()
  private readonly tally: TreeCounts = { files: 0, dirs: 0, links: 0, bytes: 0 }

  get length(): number {
    return this.addresses.length
  }

  /** Appends a scan record as the next row; a file's hash is blank until `fillFile`. */
  add(raw: RawScanRecord, sig: string): void {
    const recordLength = raw.end - raw.start
    const isFile = raw.buf[raw.start] === TYPE_F
    const rowLength = ROW_HEAD + recordLength + (isFile ? SHA_BYTES : 0)
    let c = this.chunks.length - 1
    if (this.chunkUsed[c]! + rowLength > this.chunks[c]!.length) {
      this.chunks.push(Buffer.allocUnsafe(Math.max(CHUNK, rowLength)))
      this.chunkUsed.push(0)
      this.chunkFirstRow.push(this.addresses.length)
      c++
    }
    const at = this.chunkUsed[c]!
    this.chunkUsed[c] = writeRecordRow(this.chunks[c]!, at, raw)
    this.addresses.push(c * ADDRESS_SPLIT + at)
    const type = raw.buf[raw.start]!
    if (isFile) {
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

  /** Writes the index durably: rows copied a chunk at a time, the few exceptions re-encoded. */
  async write(file: string, id: number): Promise<void> {
    const special = [...new Set([...this.newSigs.keys(), ...this.dropped])].sort((a, b) => a - b)
    const c = this.tally
    await writeStreamAtomic(file, async (handle) => {
      await writeAll(handle, Buffer.from(encodeIndexHeader(id, c)))
      let from = 0
      for (const n of [...special, this.length]) {
        for (const part of this.rowSlices(from, n)) await writeAll(handle, part)
        if (n < this.length && !this.dropped.has(n)) {
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

  /** The bytes of rows `from` to `to` (exclusive), as slices of the chunks they span. */
  private rowSlices(from: number, to: number): Buffer[] {
    const slices: Buffer[] = []
    while (from < to) {
      const c = Math.floor(this.addresses[from]! / ADDRESS_SPLIT)
      const chunkEnd = this.chunkFirstRow[c + 1] ?? this.length
      const next = Math.min(to, chunkEnd)
      const start = this.addresses[from]! - c * ADDRESS_SPLIT
      const end = next < chunkEnd ? this.addresses[next]! - c * ADDRESS_SPLIT : this.chunkUsed[c]!
      slices.push(this.chunks[c]!.subarray(start, end))
      from = next
    }
    return slices
  }

  private locate(n: number): [Buffer, number] {
    const address = this.addresses[n]!
    const c = Math.floor(address / ADDRESS_SPLIT)
    return [this.chunks[c]!, address - c * ADDRESS_SPLIT]
  }
}
