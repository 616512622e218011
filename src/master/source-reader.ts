import { createHash } from 'node:crypto'
import { closeSync, constants, fstatSync, openSync, readSync, statSync, type BigIntStats } from 'node:fs'
import type { StreamedBody } from '../archive/tar-pack.js'
import { FileChangingError, SourceChangedError } from '../core/errors.js'
import { byteStringOf, fsPath, quotePath, type FsPath } from '../core/byte-path.js'
import { readFileStable } from '../fs/stable-read.js'
import { sizeOfSig, statSignature } from '../fs/stat-signature.js'

/**
 * Reads source files for a build at four system calls each (open, read, fstat, close), into one
 * reused buffer. The scan's stat stands as "before": if the fstat after the read gives the scan's
 * stat signature (size, mtime, ctime, inode, mode), nobody wrote the file in between, and the bytes
 * are the ones the scan saw. Otherwise the file is read again until it holds still (stable-read.ts).
 */
export type SourceRead =
  | {
      readonly data: Buffer
      /** statSignature of the file as read */
      readonly sig: string
      /** The later of its mtime and ctime, in ns: how recently it was written (the racy check). */
      readonly changedNs: bigint
      /** Its sha256 in hex, when the read already hashed it (a reader thread: read-ahead.ts). */
      readonly sha256?: string
    }
  | { readonly large: LargeFile; readonly sig: string; readonly changedNs: bigint }
  | { readonly gone: string }

/** What reads a build's source files: the reader itself, or a read-ahead in front of it. */
export interface SourceFiles {
  read(path: string, scanSig: string): SourceRead
}

/** Files this large get their own buffer: the packer may hand them on without copying. */
const SCRATCH_BYTES = 256 << 10

/**
 * Files this large are never held whole (a 5 GiB file would not fit a Buffer, and a 200 MB one
 * cost a build 660 MB): they are hashed in one pass, and their bytes streamed into the archive in
 * a second, which must hash the same (LargeFile).
 */
export const LARGE_FILE_BYTES = 16 << 20
const STREAM_CHUNK = 1 << 20
const MAX_ATTEMPTS = 5

/**
 * The first read of a file written since it was last read would update its atime (relatime): a
 * journalled inode write per changed file, about a fifth of the cost of reading it, and a build
 * has no business changing its source's metadata. O_NOATIME is refused (EPERM) on files of other
 * owners unless we have CAP_FOWNER: then the reader does without it, and remembers.
 */
const O_NOATIME: number = (constants as { O_NOATIME?: number }).O_NOATIME ?? 0
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW

export class SourceReader implements SourceFiles {
  private scratch = Buffer.allocUnsafe(SCRATCH_BYTES)
  private chunk: Buffer | null = null
  /** O_NOATIME, or 0 once the system refused it (read-ahead threads start from it). */
  noAtime = O_NOATIME
  filesRead = 0

  /** The root as a byte string, to which the scan's byte paths are appended. */
  readonly root: string

  constructor(root: string) {
    this.root = byteStringOf(root)
  }

  /** The file's bytes (valid until the next call when small), or why it is gone. */
  read(path: string, scanSig: string): SourceRead {
    const abs = fsPath(`${this.root}/${path}`) // scanned paths are relative and clean: no join() needed
    try {
      this.filesRead++
      const size = sizeOfSig(scanSig)
      if (size < SCRATCH_BYTES) {
        const fast = this.readKnown(abs, scanSig, size)
        if (fast) return fast
      }
      // The size now, not the scan's: a file that grew past the bound since is not read whole either.
      if (size >= LARGE_FILE_BYTES || statSync(abs).size >= LARGE_FILE_BYTES) return this.readLarge(abs, path)
      const stable = readFileStable(abs)
      return { data: stable.data, sig: statSignature(stable.stat), changedNs: changedNsOf(stable.stat) }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'EISDIR' || code === 'ENOTDIR' || err instanceof FileChangingError) {
        return { gone: code ?? (err as Error).message }
      }
      throw err
    }
  }

  private readKnown(abs: FsPath, scanSig: string, size: number): SourceRead | null {
    const fd = this.open(abs)
    try {
      // One byte more than expected: a file that grew shows up as a longer read.
      const n = readSync(fd, this.scratch, 0, size + 1, 0)
      const stat = fstatSync(fd, { bigint: true })
      if (n !== size || statSignature(stat) !== scanSig) return null
      return { data: this.scratch.subarray(0, n), sig: scanSig, changedNs: changedNsOf(stat) } // the scan's string: one flat string kept, not a new one
    } finally {
      closeSync(fd)
    }
  }

  /** The first pass over a large file: its sha256, proven by fstat to belong to one version of it. */
  private readLarge(abs: FsPath, path: string): SourceRead {
    const fd = this.open(abs)
    const chunk = (this.chunk ??= Buffer.allocUnsafe(STREAM_CHUNK))
    try {
      for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
        const before = fstatSync(fd, { bigint: true })
        if (!before.isFile()) throw new FileChangingError(`${abs} is no longer a regular file`)
        const hash = createHash('sha256')
        let size = 0
        for (let n; (n = readSync(fd, chunk, 0, STREAM_CHUNK, size)) > 0; size += n) hash.update(chunk.subarray(0, n))
        const after = fstatSync(fd, { bigint: true })
        if (after.size === before.size && after.mtimeNs === before.mtimeNs && after.ctimeNs === before.ctimeNs && BigInt(size) === after.size) {
          return { large: new LargeFile(abs, path, size, hash.digest('hex'), this.noAtime), sig: statSignature(after), changedNs: changedNsOf(after) }
        }
      }
      throw new FileChangingError(`${abs} kept changing while it was read (${MAX_ATTEMPTS} attempts)`)
    } finally {
      closeSync(fd)
    }
  }

  private open(abs: FsPath): number {
    if (this.noAtime) {
      try {
        return openSync(abs, READ_FLAGS | this.noAtime)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err
        this.noAtime = 0
      }
    }
    return openSync(abs, READ_FLAGS)
  }
}

export function changedNsOf(st: BigIntStats): bigint {
  return st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs
}

/**
 * A large file's bytes, streamed when packed: opened again, read in 1 MiB chunks into one buffer
 * (the packer's sink is done with a chunk when its write settles: tar-pack.ts), hashed on the way. Bytes that no longer hash to what the
 * first pass found mean the file was rewritten in between: the archive cannot take them back, so
 * the build stops, naming the file, and publishes nothing.
 */
export class LargeFile implements StreamedBody {
  constructor(
    private readonly abs: FsPath,
    private readonly path: string,
    readonly size: number,
    readonly sha256: string,
    private readonly noAtime: number,
  ) {}

  async writeTo(write: (chunk: Buffer) => Promise<void>): Promise<void> {
    const fd = openSync(this.abs, READ_FLAGS | this.noAtime)
    try {
      const hash = createHash('sha256')
      const buf = Buffer.allocUnsafe(Math.min(STREAM_CHUNK, this.size))
      let sent = 0
      while (sent < this.size) {
        const chunk = buf.subarray(0, Math.min(STREAM_CHUNK, this.size - sent))
        const n = readSync(fd, chunk, 0, chunk.length, sent)
        if (n === 0) break
        const part = n === chunk.length ? chunk : chunk.subarray(0, n)
        hash.update(part)
        sent += n
        await write(part)
      }
      if (sent !== this.size || hash.digest('hex') !== this.sha256) {
        throw new SourceChangedError(`${quotePath(this.path)} (${this.size} bytes) changed between its hashing and its packing: nothing was published; run the build again`)
      }
    } finally {
      closeSync(fd)
    }
  }
}
