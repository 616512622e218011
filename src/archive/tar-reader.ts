import { UnsafeArchiveError } from '../core/errors.js'
import { BLOCK, decodePaxRecords, decodeUstarHeader } from './ustar-header.js'
import { quotePath } from '../core/byte-path.js'

/**
 * A strict push parser for the tar streams this project writes: POSIX ustar headers with optional
 * pax 'x' headers for long or non-ASCII names. Regular files, directories and symlinks only;
 * anything else (hardlinks, devices, fifos, global headers, GNU long names, GNU-format or pre-POSIX
 * headers) is refused, as is a bad checksum or data after the end. Callbacks run synchronously,
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

/** Pax headers we write hold a path and a link target: a few KiB at most. */
const MAX_PAX_BYTES = 64 << 10

type State = 'header' | 'pax' | 'data' | 'padding' | 'eof'

interface PaxFields {
  path?: string | undefined
  linkpath?: string | undefined
  size?: number | undefined
}

/** Type flags we refuse, named for the error message. */
const REFUSED: Readonly<Record<string, string>> = {
  '1': 'hard link',
  '3': 'character device',
  '4': 'block device',
  '6': 'fifo',
  '7': 'contiguous file',
  g: 'pax global header',
  L: 'GNU long name, from tar --format=gnu; write archives with --format=pax or ustar',
  K: 'GNU long link name, from tar --format=gnu; write archives with --format=pax or ustar',
  D: 'GNU dump directory',
  S: 'GNU sparse file',
  M: 'GNU multi-volume continuation',
  V: 'tape volume label',
}

export class TarReader {
  private state: State = 'header'
  /** A header block split across writes: at most 511 bytes wait here. */
  private readonly partial = Buffer.alloc(BLOCK)
  private partialLen = 0
  private remaining = 0 // bytes of data or padding left
  private paxBody: Buffer[] = []
  private pax: PaxFields | null = null
  private zeroBlocks = 0
  private entrySize = 0

  constructor(private readonly visitor: TarVisitor) {}

  write(buf: Buffer): void {
    let off = 0
    if (this.partialLen) {
      // Complete the waiting block from the front of this chunk instead of concatenating: the
      // chunk itself may be large, and copying it for every write would double the reading cost.
      const n = Math.min(BLOCK - this.partialLen, buf.length)
      buf.copy(this.partial, this.partialLen, 0, n)
      this.partialLen += n
      off = n
      if (this.partialLen < BLOCK) return
      this.partialLen = 0
      this.onBlock(this.partial, 0)
    }
    while (off < buf.length) {
      if (this.state === 'data' || this.state === 'padding' || this.state === 'pax') {
        const n = Math.min(this.remaining, buf.length - off)
        if (this.state === 'data') this.visitor.data(buf.subarray(off, off + n))
        else if (this.state === 'pax') this.paxBody.push(Buffer.from(buf.subarray(off, off + n)))
        off += n
        this.remaining -= n
        if (this.remaining === 0) this.afterBody()
        continue
      }
      if (buf.length - off < BLOCK) {
        buf.copy(this.partial, 0, off)
        this.partialLen = buf.length - off
        return
      }
      this.onBlock(buf, off)
      off += BLOCK
    }
  }

  /** Call at the end of the stream: it must have ended exactly after the end-of-archive blocks. */
  close(): void {
    if (this.state !== 'eof' || this.partialLen) throw new UnsafeArchiveError('the archive is truncated')
  }

  private onBlock(buf: Buffer, off: number): void {
    if (this.state === 'eof') {
      if (!isZero(buf, off)) throw new UnsafeArchiveError('data after the end of the archive')
      return
    }
    if (isZero(buf, off)) {
      if (this.pax) throw new UnsafeArchiveError('a pax header with no entry after it')
      if (++this.zeroBlocks === 2) this.state = 'eof'
      return
    }
    if (this.zeroBlocks) throw new UnsafeArchiveError('a lone zero block inside the archive')
    const h = decodeUstarHeader(buf, off)
    if (!h.checksumValid) throw new UnsafeArchiveError('an archive header has a bad checksum')
    const refused = REFUSED[h.type]
    if (refused !== undefined) throw new UnsafeArchiveError(`archive entry ${quotePath(h.path)} is of a refused type (${refused})`)
    if (h.type !== '0' && h.type !== '\0' && h.type !== '5' && h.type !== '2' && h.type !== 'x') {
      throw new UnsafeArchiveError(`archive entry ${quotePath(h.path)} is of a refused type (type flag ${JSON.stringify(h.type)})`)
    }
    if (h.magic !== 'ustar') {
      throw new UnsafeArchiveError(
        h.magic === 'gnu'
          ? `archive entry ${quotePath(h.path)} has a GNU-format header: only POSIX ustar and pax archives are read (tar --format=pax)`
          : `archive entry ${quotePath(h.path)} has no ustar magic: only POSIX ustar and pax archives are read`,
      )
    }
    const size = h.size
    if (!Number.isSafeInteger(size) || size < 0) throw new UnsafeArchiveError('an archive header has a bad size')
    if (Number.isNaN(h.mode)) throw new UnsafeArchiveError(`archive entry ${quotePath(h.path)} has a bad mode`)
    if (h.type === 'x') {
      if (this.pax) throw new UnsafeArchiveError('two pax headers in a row')
      if (size > MAX_PAX_BYTES) throw new UnsafeArchiveError(`a pax header of ${size} bytes`)
      this.paxBody = []
      this.remaining = size
      this.state = size ? 'pax' : 'header'
      if (!size) this.pax = {}
      return
    }
    const pax = this.pax
    this.pax = null
    let path = pax?.path ?? h.path
    // Pre-POSIX archives marked directories as files with a trailing '/' (node-tar reads them so).
    // The pax path decides: the truncated ustar name under it may end in '/' by accident.
    const type = h.type === '5' || (h.type !== '2' && path.endsWith('/')) ? 'd' : h.type === '2' ? 'l' : 'f'
    if (type === 'd' && path.endsWith('/')) path = path.slice(0, -1)
    const linkpath = pax?.linkpath ?? h.linkpath
    if (type !== 'f' && size !== 0) throw new UnsafeArchiveError(`${quotePath(path)}: a ${type === 'd' ? 'directory' : 'symlink'} with data`)
    // Another reader would take the pax size: differing sizes would make us see different entries.
    if (pax?.size !== undefined && pax.size !== size) throw new UnsafeArchiveError(`${quotePath(path)}: its pax size differs from its header's`)
    this.visitor.entry({ type, path, mode: h.mode & 0o7777, size, linkpath })
    this.remaining = size
    this.entrySize = size
    if (type === 'f' && size > 0) this.state = 'data'
    else this.visitor.end()
  }

  private afterBody(): void {
    if (this.state === 'pax') {
      const body = Buffer.concat(this.paxBody)
      this.pax = parsePax(body)
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

/** The pax keys that change what we read; the rest (times, owners, charset) do not matter here. */
function parsePax(body: Buffer): PaxFields {
  let records: Map<string, string>
  try {
    records = decodePaxRecords(body)
  } catch (err) {
    throw new UnsafeArchiveError(`a pax header is malformed: ${(err as Error).message}`, { cause: err })
  }
  for (const key of records.keys()) {
    // Sparse files keep a map in their data: writing it out as-is would corrupt the file.
    if (key.startsWith('GNU.sparse.')) throw new UnsafeArchiveError('a pax header describes a sparse file')
  }
  const path = records.get('path')
  const linkpath = records.get('linkpath')
  const sizeText = records.get('size')
  for (const [key, value] of [['path', path], ['linkpath', linkpath]] as const) {
    if (value === '') throw new UnsafeArchiveError(`a pax header has an empty ${key}`)
    if (value?.includes('\0')) throw new UnsafeArchiveError(`a pax header's ${key} holds a NUL byte`)
  }
  let size: number | undefined
  if (sizeText !== undefined) {
    size = /^[0-9]{1,16}$/.test(sizeText) ? Number(sizeText) : NaN
    if (!Number.isSafeInteger(size)) throw new UnsafeArchiveError('a pax header has a bad size')
  }
  return { path, linkpath, size }
}

function padOf(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK
}

function isZero(b: Buffer, off: number): boolean {
  for (let i = off; i < off + BLOCK; i++) if (b[i] !== 0) return false
  return true
}
