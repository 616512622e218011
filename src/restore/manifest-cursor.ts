import { isUtf8 } from 'node:buffer'
import { UnsafeArchiveError } from '../core/errors.js'
import { parseBodyLine, parseHeaderLine, type ManifestHeader, type ManifestLine } from '../core/manifest.js'
import { quotePath } from '../core/byte-path.js'

/**
 * Walks a decompressed manifest line by line, synchronously, so the tar visitor can ask for "the
 * next entry" inside its callbacks. It also enforces the order rules: deletions strictly
 * descending, entries strictly ascending (no duplicates), deletions before entries; and the
 * header's counts: exactly that many deletions and entries, refused at the first one too many.
 */
export class ManifestCursor {
  readonly header: ManifestHeader
  private pos = 0
  private lineNo = 1
  private bodyStart: number
  private lastDeleted: string | null = null
  private lastEntry: string | null = null
  private inEntries = false
  private deletions = 0
  private entries = 0

  constructor(private readonly buf: Buffer) {
    // Names that are not UTF-8 travel as base64 (pb, lb): raw bytes that are not UTF-8 would be
    // decoded into U+FFFD, another name.
    if (!isUtf8(buf)) throw new UnsafeArchiveError('the manifest is not valid UTF-8 text')
    const nl = buf.indexOf(10)
    if (nl < 0) throw new UnsafeArchiveError('the manifest has no header line')
    this.header = parseHeaderLine(buf.toString('utf8', 0, nl))
    this.bodyStart = nl + 1
    this.pos = this.bodyStart
  }

  rewind(): void {
    this.pos = this.bodyStart
    this.lineNo = 1
    this.lastDeleted = null
    this.lastEntry = null
    this.inEntries = false
    this.deletions = 0
    this.entries = 0
  }

  /** Next body line, or null at the end. */
  next(): ManifestLine | null {
    if (this.pos >= this.buf.length) {
      // The signed record's counts (which the header must repeat) drive the mass-deletion guard
      // and the manifest's size bound: a body that holds other counts is refused.
      const h = this.header
      if (this.deletions !== h.deleted || this.entries !== h.entries) {
        throw new UnsafeArchiveError(`the manifest holds ${this.entries} entries and ${this.deletions} deletions, its header declares ${h.entries} and ${h.deleted}`)
      }
      return null
    }
    let nl = this.buf.indexOf(10, this.pos)
    if (nl < 0) nl = this.buf.length
    const text = this.buf.toString('utf8', this.pos, nl)
    this.pos = nl + 1
    this.lineNo++
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
