import type { FileRead } from './build-scan.js'

/**
 * The files a delta build reads (new, or with a stat signature that moved), one row of typed
 * arrays each and no object: an object per file with its hash as a hex string cost ~330 bytes of
 * heap a file, ~40 MB for the ~130,000-150,000 files of an hour at 1M (BENCHMARKS.md, "Delta build
 * memory"). A row keeps its path, the scan's signature (the index's once read), the sha256 as 32
 * bytes, the previous index's row, where its bytes wait if it was read during the scan, and its state.
 *
 * Rows are numbered in scan order; the next index refers to them by number (master-index.ts), the
 * packing takes them in path order (`pathOrder`).
 */
export class FilesToRead {
  length = 0
  private paths: string[] = []
  /** The scan's stat signature until the file is read, then the one its index row carries. */
  private sigs: string[] = []
  private sha = new Uint8Array(32 * INITIAL)
  private previousRows = new Int32Array(INITIAL)
  private earlyAt = new Float64Array(INITIAL)
  private states = new Uint8Array(INITIAL)
  /** The rare file read during the scan whose bytes come as a stream (a large file): its read. */
  private readonly streamed = new Map<number, FileRead>()

  add(path: string, scanSig: string, previousRow: number): number {
    const k = this.length
    if (k === this.states.length) this.grow()
    this.paths.push(path)
    this.sigs.push(scanSig)
    this.previousRows[k] = previousRow
    this.earlyAt[k] = -1
    this.states[k] = 0
    this.length = k + 1
    return k
  }

  path(k: number): string {
    return this.paths[k]!
  }

  /** Before the read: the scan's signature, which the read must find again; after: the index's. */
  sig(k: number): string {
    return this.sigs[k]!
  }

  previousRow(k: number): number {
    return this.previousRows[k]!
  }

  /** What reading the file found: its index signature and sha256 (hex). */
  fill(k: number, sig: string, sha256: string): void {
    this.sigs[k] = sig
    Buffer.from(this.sha.buffer, this.sha.byteOffset + 32 * k, 32).write(sha256, 'hex')
    this.states[k] = (this.states[k]! & ~DROPPED) | FILLED
  }

  /** The file is gone: no entry, not even the previous one. */
  drop(k: number): void {
    this.states[k] = (this.states[k]! & ~FILLED) | DROPPED
  }

  isFilled(k: number): boolean {
    return (this.states[k]! & FILLED) !== 0
  }

  /** Read (filled) or found gone (dropped). */
  wasRead(k: number): boolean {
    return (this.states[k]! & (FILLED | DROPPED)) !== 0
  }

  /** The sha256 the read found, in hex (made when asked: the index and the packing each ask once). */
  sha256(k: number): string {
    return Buffer.from(this.sha.buffer, this.sha.byteOffset + 32 * k, 32).toString('hex')
  }

  /** The previous row standing for a file not read (or not yet), or -1. */
  standIn(k: number): number {
    return this.states[k]! & (FILLED | DROPPED) ? -1 : this.previousRows[k]!
  }

  /** Read during the scan: where its bytes wait (build-scan.ts EarlyReads), or -1. */
  early(k: number): number {
    return this.earlyAt[k]!
  }

  setEarly(k: number, address: number): void {
    this.earlyAt[k] = address
  }

  /** A file read during the scan whose bytes are streamed when packed. */
  setStreamed(k: number, read: FileRead): void {
    this.streamed.set(k, read)
  }

  streamedRead(k: number): FileRead | undefined {
    return this.streamed.get(k)
  }

  /** What the scan judged, for a file read during it (PREVIOUS_* in build-scan.ts). */
  previous(k: number): number {
    return this.states[k]! >> PREVIOUS_SHIFT
  }

  setPrevious(k: number, previous: number): void {
    this.states[k] = (this.states[k]! & ((1 << PREVIOUS_SHIFT) - 1)) | (previous << PREVIOUS_SHIFT)
  }

  /** Packed: whatever was kept of its bytes is let go. */
  release(k: number): void {
    this.earlyAt[k] = -1
    if (this.streamed.size > 0) this.streamed.delete(k)
  }

  /** The rows' numbers in path order (byte order: paths are byte strings), as the archive takes them. */
  pathOrder(): Uint32Array {
    const order = new Uint32Array(this.length)
    for (let k = 0; k < order.length; k++) order[k] = k
    const paths = this.paths
    return order.sort((a, b) => (paths[a]! < paths[b]! ? -1 : paths[a]! > paths[b]! ? 1 : 0))
  }

  private grow(): void {
    const n = this.states.length * 2
    const sha = new Uint8Array(32 * n)
    sha.set(this.sha)
    this.sha = sha
    const previousRows = new Int32Array(n)
    previousRows.set(this.previousRows)
    this.previousRows = previousRows
    const earlyAt = new Float64Array(n)
    earlyAt.set(this.earlyAt)
    this.earlyAt = earlyAt
    const states = new Uint8Array(n)
    states.set(this.states)
    this.states = states
  }
}

const INITIAL = 1024
const FILLED = 1
const DROPPED = 2
const PREVIOUS_SHIFT = 2
