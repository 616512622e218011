import { createReadStream, statSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { ObjectMissingError, SnapshotError, TooLargeError, UsageError, asSnapshotError } from '../core/errors.js'
import { checkRelPath, type ObjectExpectation, type ObjectSource } from './object-source.js'
import { PartFile } from './part-file.js'
import type { RateLimiter } from './rate-limit.js'

/**
 * `--from DIR`: a store on a local or mounted filesystem. Objects are copied through a part file
 * and checked like a download; a local copy is cheap enough to redo whole, so nothing resumes.
 */
export class DirSource implements ObjectSource {
  readonly description: string
  private readonly root: string

  constructor(
    dir: string,
    private readonly limiter?: RateLimiter,
  ) {
    this.root = resolve(dir)
    this.description = dir
    let isDir = false
    try {
      isDir = statSync(this.root).isDirectory()
    } catch {
      // reported below
    }
    if (!isDir) throw new UsageError(`--from ${dir}: not a directory (give a store directory or an http(s):// URL)`)
  }

  async getSmall(relPath: string, maxBytes: number): Promise<Buffer | null> {
    const file = this.file(relPath)
    let handle: FileHandle
    try {
      handle = await open(file, 'r')
    } catch (err) {
      if (isMissing(err)) return null
      throw asSnapshotError(err, `reading ${file}`)
    }
    try {
      const parts: Buffer[] = []
      let total = 0
      for (;;) {
        const buf = Buffer.allocUnsafe(Math.min(64 * 1024, maxBytes + 1))
        const { bytesRead } = await handle.read(buf, 0, buf.length, null)
        if (bytesRead === 0) return Buffer.concat(parts, total)
        total += bytesRead
        if (total > maxBytes) throw new TooLargeError(file, maxBytes)
        parts.push(buf.subarray(0, bytesRead))
      }
    } catch (err) {
      throw asSnapshotError(err, `reading ${file}`)
    } finally {
      await handle.close()
    }
  }

  async fetchObject(relPath: string, dest: string, expect: ObjectExpectation, progress?: (bytes: number) => void): Promise<void> {
    const file = this.file(relPath)
    const part = new PartFile(dest, expect, file)
    try {
      await part.open(false) // a local copy is cheap enough to redo whole
      try {
        for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
          await this.limiter?.consume(chunk.length)
          await part.append(chunk)
          progress?.(part.size)
        }
      } catch (err) {
        if (err instanceof SnapshotError) throw err
        if (isMissing(err)) throw new ObjectMissingError(`${file}: the object is missing from the store; the store may be damaged or pruned`, { cause: err })
        throw asSnapshotError(err, `reading ${file}`)
      }
      const bad = part.mismatch()
      if (bad) throw bad
      await part.publish()
    } catch (err) {
      await part.discard()
      throw err
    }
  }

  private file(relPath: string): string {
    return join(this.root, ...checkRelPath(relPath))
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOENT' || code === 'ENOTDIR'
}
