import { BLOCK, encodePaxHeader, encodeUstarHeader, type UstarType } from './ustar-header.js'

/**
 * Packs entries into a standard tar stream by encoding headers straight into large buffers:
 * node-tar's high-level `tar.c` costs ~100 µs and a stream per entry, which a million tiny files
 * cannot afford (README, "Dependencies"). Owner is always 0/0: archives never tell a replica who
 * should own a file. Each header holds its entry's mtime in whole seconds, for readers of the
 * archive with GNU tar; replicas take the exact time from the manifest.
 *
 * The sink must be done with a chunk when its promise settles (object-writer.ts's write is): the
 * packer then fills the same buffer again. A fresh 4 MiB buffer per flush was ~130 MB of garbage
 * for the ~150,000 files of an hour at 1M, which the collector freed only after ~70 MB of it had
 * piled up (BENCHMARKS.md, "Delta build memory"). A file of DIRECT_BYTES or more goes to the sink
 * as the caller's own buffer, uncopied.
 */
/**
 * A file's bytes too many to hold in memory at once: exactly `size` of them, handed to `write`
 * chunk by chunk, under the sink's back pressure. A chunk may be filled again once its write has
 * settled (the packer's sink is done with it then: see TarPacker).
 */
export interface StreamedBody {
  readonly size: number
  writeTo(write: (chunk: Buffer) => Promise<void>): Promise<void>
}

const CHUNK = 1 << 20 // one buffer, filled again: 4 MiB gave the compressor fewer calls for no measured CPU, and 3 MiB more peak
const DIRECT_BYTES = 256 << 10
const fillBytes = Uint8Array.prototype.fill // Buffer#fill's argument checks cost 3x the fill itself

export class TarPacker {
  private readonly buf = Buffer.allocUnsafe(CHUNK) // every byte up to `used` is written before it is sent
  private used = 0
  private total = 0

  constructor(private readonly sink: (chunk: Buffer) => Promise<void>) {}

  /** `path` and link targets are byte strings; `mtimeSec` whole seconds (clamped to what ustar holds). */
  async addFile(path: string, mode: number, mtimeSec: number, data: Buffer | StreamedBody): Promise<void> {
    mtimeSec = clampMtime(mtimeSec)
    if (!Buffer.isBuffer(data)) return this.addStreamedFile(path, mode, mtimeSec, data)
    const size = data.length
    const pad = (BLOCK - (size % BLOCK)) % BLOCK
    const start = this.used
    if (size < DIRECT_BYTES && BLOCK + size + pad <= CHUNK - start && encodeUstarHeader(this.buf, start, { path, mode, size, mtimeSec, type: '0' })) {
      // The common case, a small file with a plain header: no await, one copy of its bytes.
      this.buf.set(data, start + BLOCK)
      fillBytes.call(this.buf, 0, start + BLOCK + size, start + BLOCK + size + pad)
      this.used = start + BLOCK + size + pad
      this.total += BLOCK + size + pad
      return
    }
    await this.header(path, mode, size, mtimeSec, '0', undefined)
    if (size >= DIRECT_BYTES) {
      await this.flush()
      this.total += size
      await this.sink(data)
    } else {
      if (size + pad > CHUNK - this.used) await this.flush()
      this.buf.set(data, this.used)
      this.used += size
      this.total += size
    }
    if (pad) await this.zeros(pad)
  }

  private async addStreamedFile(path: string, mode: number, mtimeSec: number, body: StreamedBody): Promise<void> {
    const size = body.size
    await this.header(path, mode, size, mtimeSec, '0', undefined)
    await this.flush()
    let sent = 0
    await body.writeTo(async (chunk) => {
      sent += chunk.length
      if (sent > size) throw new RangeError(`${JSON.stringify(path)}: more than the ${size} bytes its header declares`)
      await this.sink(chunk)
    })
    if (sent !== size) throw new RangeError(`${JSON.stringify(path)}: ${sent} bytes streamed, its header declares ${size}`)
    this.total += size
    const pad = (BLOCK - (size % BLOCK)) % BLOCK
    if (pad) await this.zeros(pad)
  }

  async addDir(path: string, mode: number, mtimeSec: number): Promise<void> {
    await this.header(path + '/', mode, 0, clampMtime(mtimeSec), '5', undefined)
  }

  async addLink(path: string, target: string, mtimeSec: number): Promise<void> {
    await this.header(path, 0o777, 0, clampMtime(mtimeSec), '2', target)
  }

  /** Writes the end-of-archive blocks and returns the tar stream's exact length. */
  async finish(): Promise<number> {
    await this.zeros(2 * BLOCK)
    await this.flush()
    return this.total
  }

  private async header(path: string, mode: number, size: number, mtimeSec: number, type: UstarType, linkpath: string | undefined): Promise<void> {
    if (CHUNK - this.used < BLOCK) await this.flush()
    if (encodeUstarHeader(this.buf, this.used, { path, mode, size, mtimeSec, type, linkpath })) {
      this.used += BLOCK
      this.total += BLOCK
      return
    }
    // A name too long for its field travels in a pax header; the plain header after it keeps a
    // truncated name that pax-aware readers ignore.
    if (path.includes('\0') || linkpath?.includes('\0')) throw new RangeError(`${JSON.stringify(path)}: a NUL byte cannot be stored in a tar header`)
    await this.appendCopy(encodePaxHeader(path.endsWith('/') ? path.slice(0, -1) : path, linkpath, mtimeSec))
    const block = Buffer.alloc(BLOCK)
    encodeUstarHeader(block, 0, { path: path.slice(0, 99) + (path.endsWith('/') ? '/' : ''), mode, size, mtimeSec, type, linkpath: linkpath?.slice(0, 100) })
    await this.appendCopy(block)
  }

  private async zeros(n: number): Promise<void> {
    if (n > CHUNK - this.used) await this.flush()
    fillBytes.call(this.buf, 0, this.used, this.used + n)
    this.used += n
    this.total += n
  }

  private async appendCopy(data: Buffer): Promise<void> {
    if (data.length > CHUNK - this.used) await this.flush()
    if (data.length > CHUNK) {
      this.total += data.length
      await this.sink(data)
      return
    }
    this.buf.set(data, this.used)
    this.used += data.length
    this.total += data.length
  }

  private async flush(): Promise<void> {
    if (this.used === 0) return
    const out = this.buf.subarray(0, this.used)
    this.used = 0
    await this.sink(out)
  }
}

/** The ustar mtime field holds 0 to 8^11 - 1 seconds (to 2242). */
function clampMtime(sec: number): number {
  return Math.min(Math.max(0, sec), 0o77777777777)
}
