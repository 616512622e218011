import { createHash, type Hash } from 'node:crypto'
import { open, rename, rm, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ChecksumMismatchError, LengthMismatchError, VerifyError, asSnapshotError } from '../core/errors.js'
import { crashPoint } from '../fs/crash-points.js'
import { fsyncDir } from '../fs/durable.js'
import type { ObjectExpectation } from './object-source.js'

/**
 * The download target `dest + '.part'`: bytes are only appended, hashed as they are written, and
 * never beyond the declared length. An interrupted download resumes from the bytes already there
 * (hashed again from disk); the finished part is flushed, renamed onto `dest` and the directory
 * flushed (unless the expectation says `flush: false`: then only renamed).
 */
export class PartFile {
  readonly path: string
  size = 0
  private handle: FileHandle | undefined
  private hash: Hash = createHash('sha256')

  constructor(
    readonly dest: string,
    readonly expect: ObjectExpectation,
    readonly what: string,
  ) {
    this.path = `${dest}.part`
  }

  /** Opens the part and returns how many bytes it holds: those kept from before if `keep`. */
  async open(keep: boolean): Promise<number> {
    await this.close()
    try {
      this.handle = await open(this.path, 'a+', 0o644) // append-only writes, reads anywhere
      const { size } = await this.handle.stat()
      this.hash = createHash('sha256')
      this.size = 0
      if (!keep || size > this.expect.length) {
        if (size > 0) await this.handle.truncate(0)
        return 0
      }
      const buf = Buffer.allocUnsafe(Math.min(size, 1 << 20))
      while (this.size < size) {
        const { bytesRead } = await this.handle.read(buf, 0, Math.min(buf.length, size - this.size), this.size)
        if (bytesRead === 0) break
        this.hash.update(buf.subarray(0, bytesRead))
        this.size += bytesRead
      }
      if (this.size < size) await this.handle.truncate(this.size)
      return this.size
    } catch (err) {
      throw asSnapshotError(err, `opening ${this.path}`)
    }
  }

  async restart(): Promise<void> {
    await this.requireHandle().truncate(0).catch((err: unknown) => {
      throw asSnapshotError(err, `truncating ${this.path}`)
    })
    this.hash = createHash('sha256')
    this.size = 0
  }

  /** Refuses, unwritten, any byte past the declared length. */
  async append(chunk: Buffer): Promise<void> {
    if (this.size + chunk.length > this.expect.length) {
      throw new LengthMismatchError(`${this.what} (more than declared, cut off)`, this.expect.length, this.size + chunk.length)
    }
    const handle = this.requireHandle()
    try {
      for (let done = 0; done < chunk.length; ) {
        done += (await handle.write(chunk, done, chunk.length - done)).bytesWritten
      }
    } catch (err) {
      throw asSnapshotError(err, `writing ${this.path}`)
    }
    this.hash.update(chunk)
    this.size += chunk.length
    crashPoint('download:chunk')
  }

  /** Once every byte is in: why the part is not the declared object, if it is not. */
  mismatch(): VerifyError | undefined {
    if (this.size !== this.expect.length) return new LengthMismatchError(this.what, this.expect.length, this.size)
    const actual = this.hash.copy().digest('hex')
    return actual === this.expect.sha256 ? undefined : new ChecksumMismatchError(this.what, this.expect.sha256, actual)
  }

  /** Flush, rename onto dest, flush the directory (FORMAT.md order; see src/fs/durable.ts). */
  async publish(): Promise<void> {
    const handle = this.requireHandle()
    const flush = this.expect.flush ?? true
    try {
      if (flush) await handle.sync()
      this.handle = undefined
      await handle.close()
      await rename(this.path, this.dest)
      if (flush) fsyncDir(dirname(this.dest))
    } catch (err) {
      throw asSnapshotError(err, `saving ${this.dest}`)
    }
  }

  async close(): Promise<void> {
    const handle = this.handle
    this.handle = undefined
    await handle?.close().catch(() => undefined)
  }

  async discard(): Promise<void> {
    await this.close()
    await rm(this.path, { force: true })
  }

  private requireHandle(): FileHandle {
    if (!this.handle) throw new Error(`${this.path} is not open`) // a bug here, never the network
    return this.handle
  }
}
