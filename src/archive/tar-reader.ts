import { Header, Pax } from 'tar'
import { UnsafeArchiveError } from '../core/errors.js'

/**
 * A strict push parser for the tar streams this project writes: ustar headers (decoded by
 * node-tar's Header) with optional pax 'x' headers for long or non-ASCII names. Regular files,
 * directories and symlinks only; anything else (hardlinks, devices, fifos, global headers, GNU
 * long names) is refused, as is a bad checksum or data after the end. Callbacks run synchronously,
 * so a caller can write to disk with sync calls and no per-entry promise.
 */
export interface TarEntryHeader {
  readonly type: 'f' | 'd' | 'l'
  readonly path: string // without the trailing '/' of directories
  readonly mode: number
  readonly size: number
  readonly linkpath: string
}
export interface TarVisitor {
  entry(h: TarEntryHeader): void
  data(chunk: Buffer): void
  end(): void
}

const BLOCK = 512
/** Pax headers we write hold a path and a link target: a few KiB at most. */
const MAX_PAX_BYTES = 64 << 10

type State = 'header' | 'pax' | 'data' | 'padding' | 'eof'

export class TarReader {
  private state: State = 'header'
  private carry: Buffer = Buffer.alloc(0)
  private remaining = 0 // bytes of data or padding left
  private paxBody: Buffer[] = []
  private pax: Pax | null = null
  private zeroBlocks = 0
  private entrySize = 0

  constructor(private readonly visitor: TarVisitor) {}

  write(chunk: Buffer): void {
    let buf = this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk
    let off = 0
    while (off < buf.length) {
      if (this.state === 'data' || this.state === 'padding' || this.state === 'pax') {
        const n = Math.min(this.remaining, buf.length - off)
        const piece = buf.subarray(off, off + n)
        if (this.state === 'data') this.visitor.data(piece)
        else if (this.state === 'pax') this.paxBody.push(Buffer.from(piece))
        off += n
        this.remaining -= n
        if (this.remaining === 0) this.afterBody()
        continue
      }
      if (buf.length - off < BLOCK) break
      const block = buf.subarray(off, off + BLOCK)
      off += BLOCK
      this.onBlock(block)
    }
    this.carry = off < buf.length ? Buffer.from(buf.subarray(off)) : Buffer.alloc(0)
    buf = this.carry
  }

  /** Call at the end of the stream: it must have ended exactly after the end-of-archive blocks. */
  close(): void {
    if (this.state !== 'eof' || this.carry.length) throw new UnsafeArchiveError('the archive is truncated')
  }

  private onBlock(block: Buffer): void {
    if (this.state === 'eof') {
      if (!isZero(block)) throw new UnsafeArchiveError('data after the end of the archive')
      return
    }
    if (isZero(block)) {
      if (this.pax) throw new UnsafeArchiveError('a pax header with no entry after it')
      if (++this.zeroBlocks === 2) this.state = 'eof'
      return
    }
    if (this.zeroBlocks) throw new UnsafeArchiveError('a lone zero block inside the archive')
    const h = new Header(block, 0)
    if (!h.cksumValid) throw new UnsafeArchiveError('an archive header has a bad checksum')
    const size = h.size ?? 0
    if (!Number.isSafeInteger(size) || size < 0) throw new UnsafeArchiveError('an archive header has a bad size')
    switch (h.type) {
      case 'ExtendedHeader':
        if (this.pax) throw new UnsafeArchiveError('two pax headers in a row')
        if (size > MAX_PAX_BYTES) throw new UnsafeArchiveError(`a pax header of ${size} bytes`)
        this.paxBody = []
        this.remaining = size
        this.state = size ? 'pax' : 'header'
        if (!size) this.pax = new Pax({})
        return
      case 'File':
      case 'OldFile':
      case 'Directory':
      case 'SymbolicLink':
        break
      default:
        throw new UnsafeArchiveError(`archive entry ${JSON.stringify(h.path)} is of a refused type (${h.type})`)
    }
    const pax = this.pax
    this.pax = null
    const type = h.type === 'Directory' ? 'd' : h.type === 'SymbolicLink' ? 'l' : 'f'
    let path = pax?.path ?? h.path ?? ''
    if (type === 'd' && path.endsWith('/')) path = path.slice(0, -1)
    const linkpath = pax?.linkpath ?? h.linkpath ?? ''
    if (type !== 'f' && size !== 0) throw new UnsafeArchiveError(`${JSON.stringify(path)}: a ${type === 'd' ? 'directory' : 'symlink'} with data`)
    this.visitor.entry({ type, path, mode: (h.mode ?? 0) & 0o7777, size, linkpath })
    this.remaining = size
    this.entrySize = size
    if (type === 'f' && size > 0) this.state = 'data'
    else this.visitor.end()
  }

  private afterBody(): void {
    if (this.state === 'pax') {
      const body = Buffer.concat(this.paxBody)
      this.pax = Pax.parse(body.toString('utf8'))
      this.paxBody = []
      const pad = padOf(body.length)
      this.state = pad ? 'padding' : 'header'
      this.remaining = pad
      return
    }
    if (this.state === 'data') {
      this.visitor.end()
      const pad = padOf(this.entrySize)
      this.state = pad ? 'padding' : 'header'
      this.remaining = pad
      return
    }
    this.state = 'header' // end of padding
  }
}

function padOf(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false
  return true
}
