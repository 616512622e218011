import { closeSync, constants, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs'
import { byteStringOf, fsPath } from '../core/byte-path.js'
import { readFileStable, FileChangingError } from '../fs/stable-read.js'
import { sizeOfSig, statSignature } from '../fs/tree-scan.js'

/**
 * Reads source files for a build at four system calls each (open, read, fstat, close), into one
 * reused buffer. The scan's stat stands as "before": if the fstat after the read gives the scan's
 * stat signature (size, mtime, ctime, inode, mode), nobody wrote the file in between, and the bytes
 * are the ones the scan saw. Otherwise the file is read again until it holds still (stable-read.ts).
 */
export type SourceRead = { readonly data: Buffer; readonly stat: BigIntStats; /** statSignature(stat) */ readonly sig: string } | { readonly gone: string }

/** Files this large get their own buffer: the packer may hand them on without copying. */
const SCRATCH_BYTES = 256 << 10

/**
 * The first read of a file written since it was last read would update its atime (relatime): a
 * journalled inode write per changed file, about a fifth of the cost of reading it, and a build
 * has no business changing its source's metadata. O_NOATIME is refused (EPERM) on files of other
 * owners unless we have CAP_FOWNER: then the reader does without it, and remembers.
 */
const O_NOATIME: number = (constants as { O_NOATIME?: number }).O_NOATIME ?? 0
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW

export class SourceReader {
  private scratch = Buffer.allocUnsafe(SCRATCH_BYTES)
  private noAtime = O_NOATIME
  filesRead = 0

  /** The root as a byte string, to which the scan's byte paths are appended. */
  private readonly root: string

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
      const stable = readFileStable(abs)
      return { data: stable.data, stat: stable.stat, sig: statSignature(stable.stat) }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'EISDIR' || code === 'ENOTDIR' || err instanceof FileChangingError) {
        return { gone: code ?? (err as Error).message }
      }
      throw err
    }
  }

  private readKnown(abs: Buffer, scanSig: string, size: number): SourceRead | null {
    const fd = this.open(abs)
    try {
      // One byte more than expected: a file that grew shows up as a longer read.
      const n = readSync(fd, this.scratch, 0, size + 1, 0)
      const stat = fstatSync(fd, { bigint: true })
      if (n !== size || statSignature(stat) !== scanSig) return null
      return { data: this.scratch.subarray(0, n), stat, sig: scanSig } // the scan's string: one flat string kept, not a new one
    } finally {
      closeSync(fd)
    }
  }

  private open(abs: Buffer): number {
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
