import { isUtf8 } from 'node:buffer'
import { UnsafeArchiveError } from '../core/errors.js'
import { parseBodyLine, parseHeaderLine, type ManifestHeader, type ManifestLine } from '../core/manifest.js'
import { quotePath } from '../core/byte-path.js'

/** A fresh pass over a manifest's decompressed bytes each time it is called (verifyApplied reads it twice). */
export type ManifestBytes = () => AsyncIterable<Buffer>

/**
 * Walks a decompressed manifest line by line, synchronously, so the tar visitor can ask for "the
 * next entry" inside its callbacks. It also enforces the order rules: deletions strictly
 * descending, entries strictly ascending (no duplicates), deletions before entries; and the
 * header's counts: exactly that many deletions and entries, refused at the first one too many.
 *
 * The manifest is either a whole Buffer or, for a pull, streamed from its file (`open`): only a
 * window of it is held, which the caller tops up between tar chunks (`fill`), because a 1M-file
 * delta's manifest is 15-20 MB of text that a replica would otherwise hold, whole, per step
 * (BENCHMARKS.md, the delta pull's peak memory). `next` never waits: reading past what was filled
 * is a bug of the caller, reported as one.
 */
export class ManifestCursor {
  readonly header: ManifestHeader
  /** The unread part of the manifest is window[pos..]; `lines` complete lines of it are in it. */
  private window: Buffer
  private pos: number
  private lines = 0
  private lineNo = 1
  private lastDeleted: string | null = null
  private lastEntry: string | null = null
  private inEntries = false
  private deletions = 0
  private entries = 0
  /** The whole manifest as given (no stream), for rewind. */
  private readonly whole: Buffer | null
  private readonly headerBytes: Buffer

  /** The whole manifest in memory (tests, small tools). */
  constructor(buf: Buffer)
  constructor(buf: Buffer, stream: ManifestStream)
  constructor(buf: Buffer, private readonly stream: ManifestStream | null = null) {
    const nl = buf.indexOf(10)
    if (nl < 0) throw new UnsafeArchiveError('the manifest has no header line')
    this.headerBytes = Buffer.from(buf.subarray(0, nl))
    // Names that are not UTF-8 travel as base64 (pb, lb): raw bytes that are not UTF-8 would be
    // decoded into U+FFFD, another name. Checked line by line as lines are read: a newline byte
    // never occurs inside a UTF-8 sequence, so that is the same as checking the whole text.
    if (!isUtf8(this.headerBytes)) throw new UnsafeArchiveError('the manifest is not valid UTF-8 text (line 1)')
    this.header = parseHeaderLine(this.headerBytes.toString('utf8'))
    this.window = buf
    this.pos = nl + 1
    this.whole = stream ? null : buf
    if (stream) this.lines = countLines(buf, this.pos)
  }

  /**
   * Streams the manifest from `bytes`, holding a bounded window of it; more than `maxBytes` of
   * text (the bound its signed counts set) is refused as a decompression bomb, as it arrives.
   */
  static async open(bytes: ManifestBytes, maxBytes: number, what: string): Promise<ManifestCursor> {
    const stream = new ManifestStream(bytes, maxBytes, what)
    try {
      return new ManifestCursor(await stream.headerWindow(), stream)
    } catch (err) {
      await stream.close()
      throw err
    }
  }

  /** True when the next `n` lines (or the end) can be read without waiting. */
  ready(n: number): boolean {
    return this.lines >= n || this.stream === null || this.stream.ended
  }

  /** Reads ahead until `n` complete lines (or the end) are in the window. */
  async fill(n: number): Promise<void> {
    const stream = this.stream
    if (stream === null) return
    while (this.lines < n && !stream.ended) {
      const chunk = await stream.read()
      if (chunk === null) break
      const rest = this.window.length - this.pos
      this.window = rest === 0 ? chunk : Buffer.concat([this.window.subarray(this.pos), chunk], rest + chunk.length)
      this.pos = 0
      this.lines += countLines(chunk, 0)
    }
  }

  /** Back to the first body line, to walk the manifest again. */
  async rewind(): Promise<void> {
    if (this.stream) {
      const window = await this.stream.restart()
      const nl = window.indexOf(10)
      // The file is the replica's own, checked against its sha256: a second read must say the same.
      if (nl < 0 || !window.subarray(0, nl).equals(this.headerBytes)) throw new UnsafeArchiveError('the manifest changed while it was being applied')
      this.window = window
      this.pos = nl + 1
      this.lines = countLines(window, this.pos)
    } else {
      this.window = this.whole!
      this.pos = this.headerBytes.length + 1
    }
    this.lineNo = 1
    this.lastDeleted = null
    this.lastEntry = null
    this.inEntries = false
    this.deletions = 0
    this.entries = 0
  }

  /** Lets go of the file and the decoder (a walk that stops early, on an error). */
  async close(): Promise<void> {
    await this.stream?.close()
  }

  /** Next body line, or null at the end. */
  next(): ManifestLine | null {
    const buf = this.window
    const ended = this.stream === null || this.stream.ended
    let nl = buf.indexOf(10, this.pos)
    if (nl < 0) {
      if (!ended) throw new Error('internal: the manifest was read past its window (fill() first)')
      if (this.pos >= buf.length) {
        // The signed record's counts (which the header must repeat) drive the mass-deletion guard
        // and the manifest's size bound: a body that holds other counts is refused.
        const h = this.header
        if (this.deletions !== h.deleted || this.entries !== h.entries) {
          throw new UnsafeArchiveError(`the manifest holds ${this.entries} entries and ${this.deletions} deletions, its header declares ${h.entries} and ${h.deleted}`)
        }
        return null
      }
      nl = buf.length
    } else {
      this.lines--
    }
    const start = this.pos
    this.pos = nl + 1
    this.lineNo++
    const text = buf.toString('utf8', start, nl)
    // The decoder turns bytes that are not UTF-8 into U+FFFD: a line without one is valid, and only
    // a line with one (a name may hold it) is checked exactly, without a Buffer view for every line.
    if (text.includes('\uFFFD') && !isUtf8(buf.subarray(start, nl))) throw new UnsafeArchiveError(`the manifest is not valid UTF-8 text (line ${this.lineNo})`)
    const line = parseBodyLine(text, this.lineNo)
    if (line.kind === 'deleted') {
      if (this.inEntries) throw new UnsafeArchiveError(`manifest line ${this.lineNo}: a deletion after the entries`)
      if (this.lastDeleted !== null && !(line.path < this.lastDeleted)) {
        throw new UnsafeArchiveError(`manifest line ${this.lineNo}: deletion ${quotePath(line.path)} is repeated or out of order`)
      }
      this.lastDeleted = line.path
      if (++this.deletions > this.header.deleted) {
        throw new UnsafeArchiveError(`manifest line ${this.lineNo}: the manifest holds more than the ${this.header.deleted} deletions its header declares`)
      }
    } else {
      this.inEntries = true
      if (++this.entries > this.header.entries) {
        throw new UnsafeArchiveError(`manifest line ${this.lineNo}: the manifest holds more than the ${this.header.entries} entries its header declares`)
      }
      if (this.lastEntry !== null && !(line.entry.path > this.lastEntry)) {
        throw new UnsafeArchiveError(`manifest line ${this.lineNo}: entry ${quotePath(line.entry.path)} is repeated or out of order`)
      }
      this.lastEntry = line.entry.path
    }
    return line
  }
}

function countLines(buf: Buffer, from: number): number {
  let n = 0
  for (let i = buf.indexOf(10, from); i >= 0; i = buf.indexOf(10, i + 1)) n++
  return n
}

/** One pass at a time over a manifest's bytes, counted against its bound. */
class ManifestStream {
  ended = false
  private pass: AsyncIterator<Buffer> | null = null
  private total = 0

  constructor(
    private readonly bytes: ManifestBytes,
    private readonly maxBytes: number,
    private readonly what: string,
  ) {}

  /** The next chunk of this pass, or null at its end. */
  async read(): Promise<Buffer | null> {
    this.pass ??= this.bytes()[Symbol.asyncIterator]()
    const r = await this.pass.next()
    if (r.done) {
      this.ended = true
      this.pass = null
      return null
    }
    this.total += r.value.length
    if (this.total > this.maxBytes) {
      await this.close()
      throw new UnsafeArchiveError(`${this.what} unpacks to more than ${this.maxBytes} bytes`)
    }
    return r.value
  }

  /** The first chunks of a pass, up to and including the header line's newline (or all of it). */
  async headerWindow(): Promise<Buffer> {
    const parts: Buffer[] = []
    for (;;) {
      const chunk = await this.read()
      if (chunk === null) break
      parts.push(chunk)
      if (chunk.includes(10)) break
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
  }

  async restart(): Promise<Buffer> {
    await this.close()
    this.ended = false
    this.total = 0
    return this.headerWindow()
  }

  async close(): Promise<void> {
    const pass = this.pass
    this.pass = null
    this.ended = true
    await pass?.return?.()
  }
}
