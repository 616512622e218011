import { UnsafeArchiveError } from '../core/errors.js'
import { parseBodyLine, parseHeaderLine, type ManifestHeader, type ManifestLine } from '../core/manifest.js'

/**
 * Walks a decompressed manifest line by line, synchronously, so the tar visitor can ask for "the
 * next entry" inside its callbacks. It also enforces the order rules: deletions strictly
 * descending, entries strictly ascending (no duplicates), deletions before entries.
 */
export class ManifestCursor {
  readonly header: ManifestHeader
  private pos = 0
  private lineNo = 1
  private bodyStart: number
  private lastDeleted: string | null = null
  private lastEntry: string | null = null
  private inEntries = false

  constructor(private readonly buf: Buffer) {
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
  }

  /** Next body line, or null at the end. */
  next(): ManifestLine | null {
    if (this.pos >= this.buf.length) return null
    let nl = this.buf.indexOf(10, this.pos)
    if (nl < 0) nl = this.buf.length
    const text = this.buf.toString('utf8', this.pos, nl)
    this.pos = nl + 1
    this.lineNo++
    const line = parseBodyLine(text, this.lineNo)
    if (line.kind === 'deleted') {
      if (this.inEntries) throw new UnsafeArchiveError(`manifest line ${this.lineNo}: a deletion after the entries`)
      if (this.lastDeleted !== null && !(line.path < this.lastDeleted)) {
        throw new UnsafeArchiveError(`manifest line ${this.lineNo}: deletion ${JSON.stringify(line.path)} is repeated or out of order`)
      }
      this.lastDeleted = line.path
    } else {
      this.inEntries = true
      if (this.lastEntry !== null && !(line.entry.path > this.lastEntry)) {
        throw new UnsafeArchiveError(`manifest line ${this.lineNo}: entry ${JSON.stringify(line.entry.path)} is repeated or out of order`)
      }
      this.lastEntry = line.entry.path
    }
    return line
  }
}
