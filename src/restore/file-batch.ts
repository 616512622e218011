import { closeSync, constants, fstatSync, ftruncateSync, futimesSync, lstatSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs'

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
  /** A path found other than the manifest says (verify-batch.ts), not a system call that failed. */
  readonly verify?: true
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
 * Writes every file of a batch, in order: over the old file in place where that is safe
 * (openToOverwrite), else created afresh (O_EXCL, never through a symlink) after unlinking
 * whatever stood at its path; then contents, mtime, close; or unlinks a path (a directory found
 * there goes into `directories`). Stops at the first failure and says which file. Synchronous:
 * in a writer thread, several of these run at once, each blocked in its own system calls.
 */
export function writeBatch(batch: FileBatch, directories: string[] = []): BatchFailure | null {
  const buf = Buffer.from(batch.bytes.buffer, batch.bytes.byteOffset, batch.bytes.byteLength)
  const m = batch.meta
  for (let i = 0; i < batch.count; i++) {
    const at = i * FIELDS
    const path = buf.subarray(m[at]!, m[at + 1]!)
    try {
      if (m[at + 3] === UNLINK) unlinkIfThere(path, directories)
      else writeOne(path, buf.subarray(m[at + 1]!, m[at + 2]!), m[at + 3]!, m[at + 4]!, batch.atime, batch.intoEmptyTree)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      return { path: path.toString('latin1'), code: e.code, message: e.message }
    }
  }
  return null
}

/**
 * Unlinks a file or a symlink (the link itself: nothing is followed); a path already gone is no
 * error. A directory is left standing and its path (a byte string) added to `directories`: the
 * caller removes it once every unlink handed over before it (what it held) has landed.
 */
function unlinkIfThere(path: Buffer, directories: string[]): void {
  try {
    unlinkSync(path)
  } catch (err) {
    if (isDirectoryInTheWay(err, path)) directories.push(path.toString('latin1'))
    else if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}

/** An unlink failed because a directory stands at the path (Linux says EISDIR, POSIX allows EPERM). */
function isDirectoryInTheWay(err: unknown, path: string | Buffer): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return (code === 'EISDIR' || code === 'EPERM') && lstatSync(path, { throwIfNoEntry: false })?.isDirectory() === true
}

const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW
/** An existing regular file, opened to be written over: never through a symlink, never blocking on a fifo. */
const OVERWRITE = constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY
const PAGE = 4096

function writeOne(path: Buffer, contents: Buffer, mode: number, mtime: number, atime: number, intoEmptyTree: boolean): void {
  const existing = intoEmptyTree ? null : openToOverwrite(path, mode)
  const fd = existing ?? openFresh(path, mode, intoEmptyTree)
  try {
    if (existing !== null) overwrite(fd, contents)
    else for (let off = 0; off < contents.length; ) off += writeSync(fd, contents, off, contents.length - off)
    futimesSync(fd, atime, mtime)
  } finally {
    closeSync(fd)
  }
}

/**
 * The file at `path`, opened to be written over, when that is safe: a regular file of ours with no
 * other name (a hard link is replaced, never written through). A new file is created here
 * (nothing to unlink); anything else (a symlink, a directory, a fifo, another owner's file, one we
 * may not write) gives null, and is replaced afresh (openFresh). Its mode is left as it was:
 * verifyApplied sets the few that differ, after the contents (a write would clear a set-uid bit).
 *
 * Why in place: unlinking a file and creating another frees an inode and allocates one, with two
 * directory updates, each journalled. On this machine's ext4, 10k of 100k files rewritten with
 * their page cache dropped (scripts/rewrite-bench.ts --cold): whole pages in place 25-31 us per
 * file plus 25-27 us of sync, unlink + create 140-149 us plus 14-17 (BENCHMARKS.md, "Writing in
 * place").
 */
function openToOverwrite(path: Buffer, mode: number): number | null {
  let fd: number
  try {
    fd = openSync(path, OVERWRITE)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return openSync(path, CREATE, mode)
    return null
  }
  try {
    const st = fstatSync(fd)
    if (st.isFile() && st.nlink === 1 && st.uid === OWNER) return fd
  } catch {
    // Replaced afresh: whatever stopped it here would stop it there too, with the error to say.
  }
  closeSync(fd)
  return null
}

const OWNER = process.getuid?.() ?? -1

/**
 * Writes the contents over the old ones and cuts the file to their length. The contents go out in
 * whole pages, zeros after them: a write that covers a page needs none of the old bytes, where a
 * 200-byte write into a page not in the cache makes the kernel read it from the disk first (a
 * random read per file on a replica whose tree is not cached).
 */
function overwrite(fd: number, contents: Buffer): void {
  const padded = Math.ceil(contents.length / PAGE) * PAGE
  const page = padded === contents.length ? contents : pageBuffer(padded, contents)
  for (let off = 0; off < page.length; ) off += writeSync(fd, page, off, page.length - off, off)
  ftruncateSync(fd, contents.length)
}

let scratch = Buffer.alloc(0)

/** The contents, then zeros to `length`, in a buffer reused from one file to the next. */
function pageBuffer(length: number, contents: Buffer): Buffer {
  if (scratch.length < length) scratch = Buffer.allocUnsafeSlow(Math.max(length, 64 << 10))
  contents.copy(scratch)
  scratch.fill(0, contents.length, length)
  return scratch.subarray(0, length)
}

/**
 * Creates the file afresh (O_EXCL), after unlinking whatever stood at its path, as GNU tar does:
 * for what cannot be written over in place (openToOverwrite), for a file too large for a batch,
 * and for every file of an empty tree. Never with O_TRUNC: ext4 flushes a truncated-and-rewritten
 * file when it is closed (auto_da_alloc). The tree is not live, and one syncfs flushes it all
 * before the swap.
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
    if (isDirectoryInTheWay(err, path)) removeDirectory()
    else if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  return openSync(path, CREATE, mode)
}
