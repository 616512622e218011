import { closeSync } from 'node:fs'
import { openScratchFile, readAt, writeAt } from '../fs/scratch-file.js'

/**
 * The bytes of the files a delta build reads during its scan (build-scan.ts), kept until they are
 * packed: the archive takes files in path order, the scan meets them in find's order, so every
 * one waits until the scan is over. They wait in a file of their own, not in memory: held in
 * memory they were ~30 MB of a 1M build's peak (an hour's ~126,000 files, up to
 * EARLY_READ_BUDGET), now it is a 1 MiB buffer for writing and a 16 KiB window for reading.
 *
 * The file is in the store (as the manifest's spool is: a /tmp on tmpfs would be memory again)
 * and unlinked as soon as it is opened, so nothing is left behind whatever happens to the build.
 * Its pages are the page cache's, written back only if the build outlives the kernel's dirty
 * expiry (30 s by default).
 *
 * Each file is its length (u32) and its bytes, at an address (its offset) the caller keeps on its
 * row. A directory's files are read together during the scan and packed together (the archive's
 * order is by path), so one read of the window serves most of a directory's files.
 */
export class EarlyReads {
  /** Bytes of files kept so far (what EARLY_READ_BUDGET bounds). */
  bytes = 0
  private fd = -1
  private out: Buffer | null = null
  private outUsed = 0
  /** The file's length: where `out`'s bytes will go. */
  private written = 0
  private readonly window = Buffer.allocUnsafe(WINDOW)
  private windowStart = -1
  private windowLength = 0

  constructor(private readonly dir: string) {}

  /** Keeps a copy of a file's bytes; returns where they are. */
  keep(data: Buffer): number {
    if (this.fd < 0) this.open()
    const out = (this.out ??= Buffer.allocUnsafe(OUT_BYTES))
    const address = this.written + this.outUsed
    if (this.outUsed + 4 > out.length) this.flush()
    out.writeUInt32LE(data.length, this.outUsed)
    this.outUsed += 4
    for (let done = 0; done < data.length; ) {
      if (this.outUsed === out.length) this.flush()
      const n = data.copy(out, this.outUsed, done)
      this.outUsed += n
      done += n
    }
    this.bytes += data.length
    return address
  }

  /** The bytes kept at `address`: valid until the next call. */
  take(address: number): Buffer {
    if (this.outUsed > 0) {
      this.flush()
      this.out = null // the scan is over: nothing more is kept
    }
    let at = address - this.windowStart
    if (this.windowStart < 0 || at < 0 || at + 4 > this.windowLength) {
      this.fill(Math.max(0, address - WINDOW / 2)) // a directory's files are on both sides
      at = address - this.windowStart
    }
    const length = this.window.readUInt32LE(at)
    if (at + 4 + length <= this.windowLength) return this.window.subarray(at + 4, at + 4 + length)
    if (4 + length <= WINDOW) {
      this.fill(address)
      return this.window.subarray(4, 4 + length)
    }
    const data = Buffer.allocUnsafe(length) // larger than the window: read on its own
    readAt(this.fd, data, length, address + 4, "early reads' file")
    return data
  }

  /** Lets the file go (its pages with it). */
  close(): void {
    if (this.fd >= 0) closeSync(this.fd)
    this.fd = -1
    this.out = null
  }

  private open(): void {
    this.fd = openScratchFile(this.dir, 'early-reads')
  }

  private flush(): void {
    writeAt(this.fd, this.out!, this.outUsed, this.written)
    this.written += this.outUsed
    this.outUsed = 0
  }

  private fill(start: number): void {
    this.windowStart = start
    this.windowLength = Math.min(WINDOW, this.written - start)
    readAt(this.fd, this.window, this.windowLength, start, "early reads' file")
  }
}

const OUT_BYTES = 1 << 20
const WINDOW = 16 << 10
