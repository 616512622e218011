import { createHash, type Hash } from 'node:crypto'
import {
  closeSync,
  chmodSync,
  futimesSync,
  lutimesSync,
  lstatSync,
  mkdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeSync,
} from 'node:fs'
import { TarReader, type TarEntryHeader } from '../archive/tar-reader.js'
import { NameUnsupportedError, UnsafeArchiveError, VerifyError } from '../core/errors.js'
import { sha256Hex } from '../core/sha256.js'
import { TreeDigest } from '../core/tree-digest.js'
import type { ManifestEntry } from '../core/tree-entry.js'
import { parentOf } from '../core/tree-path.js'
import { openFresh } from './file-batch.js'
import { DEFAULT_WRITER_THREADS, FileWriters } from './file-writers.js'
import { DIR, FILE, GONE, LINK, VerifyBatchBuilder } from './verify-batch.js'
import type { ManifestCursor } from './manifest-cursor.js'
import { feedTar, ManifestLockstep } from './manifest-lockstep.js'
import { byteStringOf, bytesOf, fsPath, quotePath, type FsPath } from '../core/byte-path.js'
import { mtimeFromNs, utimesValue, type Mtime } from '../core/mtime.js'

/**
 * Applies one archive to a tree that is not live (a staging slot): the manifest's deletions first,
 * then each archive entry, checked in lockstep against the manifest (same path, type, mode, size,
 * link target). The bytes are the archive's, which the caller checked against the signed sha256;
 * for a full archive they are also hashed as they are written, and the tree they make must add up
 * to the signed tree digest. Directories, links and deletions are done here, synchronously (a
 * million tiny files cannot afford a promise each); small files are handed, in batches, to writer
 * threads (file-writers.ts), larger ones written here. Every write goes through a directory proven
 * real (not a symlink) under the root, so no entry can write outside the tree. Re-applying after a
 * crash is safe: every step is idempotent.
 *
 * Times: each file, link and directory gets the manifest's mtime; a directory whose contents this
 * archive changed but which it does not name gets its own time back (creating or unlinking a
 * child moves it), set after its contents; the root gets the header's mode and mtime. Paths are
 * byte strings (byte-path.ts), handed to the file system as Buffers.
 *
 * Over ~350 lines: the checks that keep a hostile archive out of the tree are kept beside the
 * writes they guard.
 */
export interface ApplyStats {
  filesWritten: number
  dirsMade: number
  linksMade: number
  deleted: number
  bytesWritten: number
}

export interface ApplyInput {
  readonly root: string
  readonly manifest: ManifestCursor
  readonly tarChunks: AsyncIterable<Buffer>
  /** Exact length of the uncompressed tar: more is a bomb, less is a truncation. */
  readonly tarBytes: number
  /** For a full archive: the digest the signed record names, checked against the tree written. */
  readonly expectDigest?: string
  /** The tree was empty before this archive: files are created without first unlinking their path. */
  readonly intoEmptyTree?: boolean
  /** Called every few thousand entries with the entries and bytes applied so far. */
  readonly onProgress?: (entries: number, bytes: number) => void
  /** Threads writing small files at once (file-writers.ts); 0 writes them on this thread. */
  readonly writerThreads?: number
}

export async function applyArchive(input: ApplyInput): Promise<ApplyStats> {
  const digest = input.expectDigest === undefined ? null : new TreeDigest()
  const writers = new FileWriters({ threads: input.writerThreads ?? DEFAULT_WRITER_THREADS, atime: Date.now() / 1000, intoEmptyTree: input.intoEmptyTree === true })
  const applier = new Applier(input.root, input.manifest, digest, writers, input.onProgress)
  try {
    try {
      await applier.applyDeletions()
      await feedTar(new TarReader(applier), input.tarChunks, input.tarBytes, applier.lockstep, () => writers.room())
      await applier.finish()
      input.onProgress?.(input.manifest.header.entries, applier.stats.bytesWritten)
      await verifyApplied(input.root, input.manifest, writers)
    } finally {
      await applier.abort()
    }
    if (digest) digest.addRoot(input.manifest.header.root)
  } finally {
    await input.manifest.close()
  }
  if (digest && digest.toHex() !== input.expectDigest) {
    throw new VerifyError(`the full archive adds up to tree digest ${digest.toHex()}, the signed record says ${input.expectDigest}`)
  }
  return applier.stats
}

class Applier {
  readonly stats: ApplyStats = { filesWritten: 0, dirsMade: 0, linksMade: 0, deleted: 0, bytesWritten: 0 }
  /** Slot-relative paths proven to be real directories ('' is the root). */
  private readonly realDirs = new Set<string>([''])
  readonly lockstep: ManifestLockstep
  /** The entry being applied, between the tar's entry() and end(). */
  private current: ManifestEntry | null = null
  private fd: number | null = null
  /** The current file goes to the writer threads (its bytes are batched, not written here). */
  private batched = false
  private batchedSize = 0
  /** Only while a digest is kept (a full archive): a delta's bytes need no hashing of their own. */
  private hash: Hash | null = null
  /** ...or the sha256 of a file whose contents came in one chunk. */
  private wholeSha256: string | null = null
  private written = 0

  private entries = 0
  /** The root as a byte string, to which entries' byte paths are appended. */
  private readonly root: string
  /** Directories whose mtime is set once their contents are done: the manifest's, or their own from before. */
  private readonly dirTimes = new Map<string, Mtime>()
  /** atime of what is written: now, as GNU tar leaves it (the writer threads' too). */
  private readonly atime: number
  private readonly intoEmptyTree: boolean

  constructor(
    private readonly rootText: string,
    private readonly manifest: ManifestCursor,
    /** For a full archive: summed from the bytes as written, not from what the manifest claims. */
    private readonly digest: TreeDigest | null,
    private readonly writers: FileWriters,
    private readonly onProgress?: (entries: number, bytes: number) => void,
  ) {
    this.atime = writers.options.atime
    this.intoEmptyTree = writers.options.intoEmptyTree
    this.root = byteStringOf(rootText)
    this.lockstep = new ManifestLockstep(manifest)
    this.dirTimes.set('', manifest.header.root.mtime)
  }

  /** The absolute path of a tree path, for the file system ('' is the root). */
  private abs(rel: string): FsPath {
    return fsPath(rel ? `${this.root}/${rel}` : this.root) // a checked relative path (tree-path.ts): join would only cost
  }

  /**
   * Every deleted path goes to the writer threads, unlinked there without a look first (an lstat
   * per deletion on this thread, its inode often not in the cache, was ~2.9 s of a 1M replica's
   * hour with its catch-up, --cpu-prof). What they find to be a directory (rare: an album removed)
   * is removed here once they are done, with whatever is still in it. Every deletion is done
   * before the first entry is written.
   */
  async applyDeletions(): Promise<void> {
    await this.lockstep.deletions((path) => {
      this.stats.deleted++
      // Under a missing or non-directory parent the path is already gone (a replay after a crash):
      // and a symlinked parent is never followed.
      const parent = parentOf(path)
      if (!this.isRealDir(parent)) return
      this.keepTimeOf(parent)
      this.writers.unlink(`${this.root}/${path}`)
    })
    for (const dir of await this.writers.drain()) this.removeAny(dir.slice(this.root.length + 1))
  }

  entry(h: TarEntryHeader): void {
    try {
      this.applyEntry(h)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENAMETOOLONG' || code === 'EILSEQ' || code === 'EINVAL') {
        throw new NameUnsupportedError(`the file system of ${this.rootText} cannot hold ${quotePath(h.path)} (${code}): put the replica's trees on one that holds every Linux name (ext4, xfs, btrfs)`, { cause: err })
      }
      throw err
    }
  }

  private applyEntry(h: TarEntryHeader): void {
    const expected = this.lockstep.match(h)
    const parent = parentOf(h.path)
    this.ensureRealDir(parent)
    this.keepTimeOf(parent)
    const abs = this.abs(h.path)
    switch (expected.type) {
      case 'd':
        this.makeDir(h.path, abs, expected.mode)
        this.dirTimes.set(h.path, expected.mtime)
        this.digest?.add(expected)
        break
      case 'l':
        this.makeLink(h.path, abs, expected.target)
        lutimesSync(abs, this.atime, utimesValue(expected.mtime))
        this.digest?.add(expected)
        break
      case 'f': {
        const path = `${this.root}/${h.path}`
        if (this.writers.takes(path, expected.size)) {
          // A directory this apply has looked at stands at the file's path: it goes here, and is forgotten.
          if (this.realDirs.has(h.path) || this.dirTimes.has(h.path)) this.removeAny(h.path)
          this.writers.begin(path, expected.size, expected.mode, utimesValue(expected.mtime))
          this.batched = true
          this.batchedSize = expected.size
        } else this.fd = this.openForWrite(h.path, abs, expected.mode)
        this.written = 0
        break
      }
    }
    this.current = expected
  }

  data(chunk: Buffer): void {
    if (!this.batched && this.fd === null) throw new UnsafeArchiveError('archive data outside a file')
    if (this.digest) {
      // Most small files come whole in one chunk: hashed in one call, with no Hash object (1M
      // files of 100-300 bytes: 0.35 s against 0.82 s for createHash, update and digest each).
      if (this.written === 0 && this.current?.type === 'f' && chunk.length === this.current.size) this.wholeSha256 = sha256Hex(chunk)
      else (this.hash ??= createHash('sha256')).update(chunk)
    }
    this.written += chunk.length
    if (this.batched) {
      if (this.written > this.batchedSize) throw new UnsafeArchiveError(`${quotePath(this.current!.path)}: more than the ${this.batchedSize} bytes expected`)
      this.writers.data(chunk)
      return
    }
    let off = 0
    while (off < chunk.length) off += writeSync(this.fd!, chunk, off, chunk.length - off)
  }

  end(): void {
    const e = this.current
    this.current = null
    if (this.onProgress && ++this.entries % 4096 === 0) this.onProgress(this.entries, this.stats.bytesWritten)
    if (!e || e.type !== 'f') return
    // Checked before a batched file is handed over: a short one must never reach a writer thread.
    // (An open file is closed by abort().)
    if (this.written !== e.size) throw new UnsafeArchiveError(`${quotePath(e.path)}: ${this.written} bytes written, ${e.size} expected`)
    if (this.batched) {
      this.batched = false
      this.writers.end()
    } else {
      const fd = this.fd!
      this.fd = null
      // No fchmod: the file was created with its mode (less the umask), and verifyApplied's lstat
      // fixes the few whose mode differs (a umask that masks it).
      try {
        futimesSync(fd, this.atime, utimesValue(e.mtime))
      } finally {
        closeSync(fd)
      }
    }
    if (this.digest) {
      this.digest.add({ ...e, sha256: this.wholeSha256 ?? (this.hash ?? createHash('sha256')).digest('hex') })
      this.hash = null
      this.wholeSha256 = null
    }
    this.stats.filesWritten++
    this.stats.bytesWritten += e.size
  }

  /** After the last archive entry: the manifest must have nothing left; then directories' times and the root's mode. */
  async finish(): Promise<void> {
    await this.lockstep.finish()
    await this.writers.drain() // every file written before its directory's time is set
    chmodSync(this.abs(''), this.manifest.header.root.mode)
    for (const [dir, mtime] of this.dirTimes) {
      if (this.isRealDir(dir)) utimesSync(this.abs(dir), this.atime, utimesValue(mtime))
    }
  }

  /** Before a change inside `dir`: remember its time, unless the manifest names it (or did already). */
  private keepTimeOf(dir: string): void {
    if (this.dirTimes.has(dir)) return
    const st = lstatSync(this.abs(dir), { bigint: true, throwIfNoEntry: false })
    if (st?.isDirectory()) this.dirTimes.set(dir, mtimeFromNs(st.mtimeNs))
  }

  /** Nothing is left open or being written when the apply returns, whether it succeeded or not. */
  async abort(): Promise<void> {
    if (this.fd !== null) closeSync(this.fd)
    this.fd = null
    await this.writers.close()
  }

  /** Proves `rel` is a real directory inside the root, ancestors first (lstat follows nothing at the end, but the kernel follows links in the middle). */
  private ensureRealDir(rel: string): void {
    if (this.realDirs.has(rel)) return
    this.ensureRealDir(parentOf(rel))
    let st
    try {
      st = lstatSync(this.abs(rel))
    } catch (err) {
      throw new UnsafeArchiveError(`${quotePath(rel)} should be a directory before its entries, but it is missing`, { cause: err })
    }
    if (!st.isDirectory()) throw new UnsafeArchiveError(`${quotePath(rel)} is not a real directory: refusing to write through it`)
    this.realDirs.add(rel)
  }

  /** Like ensureRealDir, but answers false instead of refusing. */
  private isRealDir(rel: string): boolean {
    if (this.realDirs.has(rel)) return true
    if (!this.isRealDir(parentOf(rel))) return false
    const st = lstatSync(this.abs(rel), { throwIfNoEntry: false })
    if (!st?.isDirectory()) return false
    this.realDirs.add(rel)
    return true
  }

  private removeAny(rel: string): void {
    const abs = this.abs(rel)
    let st
    try {
      st = lstatSync(abs)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    if (st.isDirectory()) {
      rmSync(abs, { recursive: true, force: true })
      this.forgetDirs(rel)
    } else unlinkSync(abs)
  }

  private forgetDirs(rel: string): void {
    this.realDirs.delete(rel)
    this.dirTimes.delete(rel)
    const prefix = rel + '/'
    for (const d of this.realDirs) if (d.startsWith(prefix)) this.realDirs.delete(d)
    for (const d of this.dirTimes.keys()) if (d.startsWith(prefix)) this.dirTimes.delete(d)
  }

  /**
   * A directory that stands already is kept, and given its mode only if that differs: a delta names
   * every directory whose mtime moved (about one per album), and a mkdir that fails with EEXIST,
   * then a chmod, cost ~1.5% of a delta pull at 1M files.
   */
  private makeDir(rel: string, abs: FsPath, mode: number): void {
    const st = lstatSync(abs, { throwIfNoEntry: false })
    if (st?.isDirectory()) {
      if ((st.mode & 0o7777) !== mode) chmodSync(abs, mode)
    } else {
      if (st) this.removeAny(rel)
      mkdirSync(abs, { mode })
      chmodSync(abs, mode) // mkdir's mode passes through the umask
      this.stats.dirsMade++
    }
    this.realDirs.add(rel)
  }

  private makeLink(rel: string, abs: FsPath, target: string): void {
    const targetBytes = fsPath(target) // verbatim: absolute, dangling or outside the tree alike
    try {
      symlinkSync(targetBytes, abs)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const st = lstatSync(abs)
      if (st.isSymbolicLink() && bytesOf(readlinkSync(abs, { encoding: 'buffer' })) === target) return
      this.removeAny(rel)
      symlinkSync(targetBytes, abs)
    }
    this.stats.linksMade++
  }

  /** A file too large for the writer threads, created afresh (file-batch.ts): in place pays for small files, not for these rare ones. */
  private openForWrite(rel: string, abs: FsPath, mode: number): number {
    return openFresh(abs, mode, this.intoEmptyTree, () => this.removeAny(rel))
  }
}

/**
 * After an apply: every path the manifest touched is on disk as it says (a stat per change, not a
 * walk of the tree), checked on the writer threads (verify-batch.ts: a regular file whose
 * permission bits differ is given its mode there). This thread reads the manifest again and
 * proves each path's parent a real directory, once per directory.
 */
async function verifyApplied(rootText: string, manifest: ManifestCursor, writers: FileWriters): Promise<void> {
  await manifest.rewind()
  const root = byteStringOf(rootText)
  const batches = new VerifyBatchBuilder(root.length + 1, (batch) => writers.verify(batch))
  // lstat follows links in the middle of a path: a path is in the tree only below real directories.
  const realDirs = new Set<string>([''])
  const underRealDirs = (path: string): boolean => {
    const parent = parentOf(path)
    if (realDirs.has(parent)) return true
    if (!underRealDirs(parent) || !lstatSync(fsPath(`${root}/${parent}`), { throwIfNoEntry: false })?.isDirectory()) return false
    realDirs.add(parent)
    return true
  }
  for (;;) {
    if (!manifest.ready(1)) await manifest.fill(512)
    const line = manifest.next()
    if (line === null) break
    const path = line.kind === 'deleted' ? line.path : line.entry.path
    if (!underRealDirs(path)) {
      // A deleted path below what is now a symlink or a file is gone from the tree (a directory
      // replaced by a link to one with the same names is not a failed deletion).
      if (line.kind === 'deleted') continue
      throw new VerifyError(`after applying: ${quotePath(path)} is not below real directories`)
    }
    const abs = `${root}/${path}`
    const e = line.kind === 'entry' ? line.entry : null
    if (!e) batches.add(abs, GONE, 0, 0)
    else if (e.type === 'f') batches.add(abs, FILE, e.mode, e.size)
    else if (e.type === 'd') batches.add(abs, DIR, e.mode, 0)
    else batches.add(abs, LINK, 0, 0)
    const room = writers.room()
    if (room) await room
  }
  batches.seal()
  await writers.drain()
}
