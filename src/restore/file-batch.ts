import { closeSync, constants, futimesSync, lstatSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs'

/**
 * Small files to write, packed back to back in one buffer so a batch crosses to a writer thread
 * without a copy (its ArrayBuffer is transferred) and without an object per file.
 *
 * `bytes` holds each file's absolute path (raw bytes) followed by its contents; `meta` holds, per
 * file, FIELDS numbers: where the path starts, where the contents start, where they end, the mode
 * and the mtime as utimes takes it (mtime.ts utimesValue). A mode of UNLINK stands for a path to
 * unlink (a file or a symlink the apply deletes), with no contents.
 */
export interface FileBatch {
  readonly bytes: Uint8Array
  readonly meta: Float64Array
  readonly count: number
  /** atime of what is written: now, as GNU tar leaves it. */
  readonly atime: number
  /** The tree was empty before this apply: try the create before any unlink. */
  readonly intoEmptyTree: boolean
}

const FIELDS = 5
export const UNLINK = -1

/** What stopped a batch: the file, and the system's error as Node would have thrown it. */
export interface BatchFailure {
  /** A byte string (byte-path.ts): a Buffer would cross back from the thread as a plain Uint8Array. */
  readonly path: string
  readonly code: string | undefined
  readonly message: string
}

/**
 * Fills batches in the order files come: begin, the contents in any number of pieces, end. A file
 * that does not fit what is left of the batch seals it first; `fits` says whether a file of that
 * size can be batched at all (larger ones are written directly by the caller).
 */
export class FileBatchBuilder {
  private bytes: Buffer
  private meta: number[] = []
  private used = 0
  private contentEnd = 0

  constructor(
    private readonly capacity: number,
    private readonly maxFiles: number,
    private readonly atime: number,
    private readonly intoEmptyTree: boolean,
    private readonly onSealed: (batch: FileBatch) => void,
  ) {
    this.bytes = Buffer.allocUnsafeSlow(capacity)
  }

  fits(pathBytes: number, size: number): boolean {
    return pathBytes + size <= this.capacity
  }

  begin(path: string, size: number, mode: number, mtime: number): void {
    if (this.used + path.length + size > this.capacity) this.seal() // a byte string: one byte a character
    const pathStart = this.used
    this.used += this.bytes.write(path, pathStart, 'latin1')
    this.meta.push(pathStart, this.used, this.used + size, mode, mtime)
    this.contentEnd = this.used + size
  }

  /** Contents of the file begun last; the caller has checked they are no more than its size. */
  data(chunk: Buffer): void {
    if (this.used + chunk.length > this.contentEnd) throw new RangeError('file contents beyond the size it was begun with')
    chunk.copy(this.bytes, this.used)
    this.used += chunk.length
  }

  end(): void {
    if (this.meta.length >= this.maxFiles * FIELDS) this.seal()
  }

  /** Hands over what is batched, if anything. */
  seal(): void {
    if (this.meta.length === 0) return
    this.onSealed({ bytes: this.bytes.subarray(0, this.used), meta: Float64Array.from(this.meta), count: this.meta.length / FIELDS, atime: this.atime, intoEmptyTree: this.intoEmptyTree })
    this.bytes = Buffer.allocUnsafeSlow(this.capacity) // the sealed one travels to a writer thread
    this.meta = []
    this.used = 0
  }
}

/**
 * Writes every file of a batch, in order, as the apply always has: created afresh (O_EXCL, never
 * through a symlink) after unlinking whatever stood at its path, contents, mtime, close. Stops at
 * the first failure and says which file. Synchronous: in a writer thread, several of these run at
 * once, each blocked in its own system calls.
 */
export function writeBatch(batch: FileBatch): BatchFailure | null {
  const buf = Buffer.from(batch.bytes.buffer, batch.bytes.byteOffset, batch.bytes.byteLength)
  const m = batch.meta
  for (let i = 0; i < batch.count; i++) {
    const at = i * FIELDS
    const path = buf.subarray(m[at]!, m[at + 1]!)
    try {
      if (m[at + 3] === UNLINK) unlinkIfThere(path)
      else writeOne(path, buf.subarray(m[at + 1]!, m[at + 2]!), m[at + 3]!, m[at + 4]!, batch.atime, batch.intoEmptyTree)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      return { path: path.toString('latin1'), code: e.code, message: e.message }
    }
  }
  return null
}

function unlinkIfThere(path: Buffer): void {
  try {
    unlinkSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}

const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW

function writeOne(path: Buffer, contents: Buffer, mode: number, mtime: number, atime: number, intoEmptyTree: boolean): void {
  const fd = openFresh(path, mode, intoEmptyTree)
  try {
    let off = 0
    while (off < contents.length) off += writeSync(fd, contents, off, contents.length - off)
    futimesSync(fd, atime, mtime)
  } finally {
    closeSync(fd)
  }
}

/**
 * Creates the file afresh (O_EXCL), after unlinking whatever stood at its path, as GNU tar does.
 * Never in place: overwriting 200 bytes of an old file whose block is not in the page cache
 * makes the kernel read that block first, a random read per file (scripts/rewrite-bench.ts
 * --cold, 10k of 100k files on a 1 KiB-block ext4, caches dropped: 189-249 us per file in place
 * against 52-66 us for unlink + create, BENCHMARKS.md). Nor with O_TRUNC: ext4 flushes a
 * truncated-and-rewritten file when it is closed (auto_da_alloc). A new inode is also never shared
 * with another tree. The tree is not live, and one syncfs flushes it all before the swap.
 *
 * A directory standing at the path (a replay after a crash) goes, as GNU tar's would, through
 * `removeDirectory` (the apply's own thread forgets what it knew of it); nothing later in the
 * archive lies below it, as entries come in path order.
 */
export function openFresh(path: string | Buffer, mode: number, intoEmptyTree: boolean, removeDirectory = (): void => rmSync(path, { recursive: true, force: true })): number {
  if (intoEmptyTree) {
    try {
      return openSync(path, CREATE, mode)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }
  try {
    unlinkSync(path) // a file or a symlink: the link itself goes, nothing is followed
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if ((code === 'EISDIR' || code === 'EPERM') && lstatSync(path, { throwIfNoEntry: false })?.isDirectory()) removeDirectory()
    else if (code !== 'ENOENT') throw err
  }
  return openSync(path, CREATE, mode)
}
