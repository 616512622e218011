import { createReadStream } from 'node:fs'
import { lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { asSnapshotError, TooLargeError, UsageError } from '../core/errors.js'
import { fsyncDir, writeFileAtomic, writeStreamAtomic } from '../fs/durable.js'
import type { PutOutcome, StoreDestination } from './store-destination.js'

const LATEST = 'latest.json'
const NAMES: Record<'objects' | 'snapshots', RegExp> = { objects: /^[0-9a-f]{64}\.[a-z.]+$/, snapshots: /^\d+\.json$/ }

/**
 * A store in a directory (a relay's, served by `snapshot serve` or nginx), written as a build
 * writes one: every file whole and flushed before the rename that names it, the directory flushed
 * after (fs/durable.ts), latest.json replaced last by the caller. Temp and partial files
 * (`.NAME.tmp`, `NAME.part`) are neither listed nor served.
 */
export class DirDestination implements StoreDestination {
  readonly description: string
  readonly root: string

  constructor(dir: string) {
    this.root = resolve(dir)
    this.description = this.root
  }

  async list(): Promise<Map<string, number>> {
    const found = new Map<string, number>()
    for (const dir of ['objects', 'snapshots'] as const) {
      const names = await readdir(join(this.root, dir)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return [] as string[]
        throw asSnapshotError(err, `listing ${join(this.root, dir)}`)
      })
      for (const n of names.filter((x) => NAMES[dir].test(x))) {
        const st = await lstat(join(this.root, dir, n)).catch(() => null)
        if (st?.isFile()) found.set(`${dir}/${n}`, st.size)
      }
    }
    const latest = await lstat(join(this.root, LATEST)).catch(() => null)
    if (latest?.isFile()) found.set(LATEST, latest.size)
    return found
  }

  async readPointer(maxBytes: number): Promise<Buffer | null> {
    const file = join(this.root, LATEST)
    const st = await lstat(file).catch(() => null)
    if (!st) return null
    if (st.size > maxBytes) throw new TooLargeError(file, maxBytes)
    return readFile(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null
      throw asSnapshotError(err, `reading ${file}`)
    })
  }

  localPath(relPath: string): string {
    return join(this.root, relPath)
  }

  /**
   * A master's own store (it has `.state/`, the build's index) is never a destination: its
   * pointer is its builds' to move, and a copy written over it would confuse the next build.
   */
  async refuseMasterStore(flag: string): Promise<void> {
    if (await lstat(join(this.root, '.state')).catch(() => null)) {
      throw new UsageError(`${flag} ${this.root} is a master's store (it has .state/): give the copy a directory of its own`)
    }
  }

  /** Makes `objects/` and `snapshots/` (a landing download needs its directory first). */
  async prepare(): Promise<void> {
    for (const dir of ['objects', 'snapshots']) await mkdir(join(this.root, dir), { recursive: true })
  }

  async putFile(relPath: string, file: string): Promise<PutOutcome> {
    const dest = this.localPath(relPath)
    await mkdir(dirname(dest), { recursive: true })
    try {
      await writeStreamAtomic(dest, async (handle) => {
        for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
          for (let done = 0; done < chunk.length; ) done += (await handle.write(chunk, done, chunk.length - done)).bytesWritten
        }
        return { result: undefined }
      })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !(await lstat(file).catch(() => null))) return 'vanished'
      throw asSnapshotError(err, `copying ${file} to ${dest}`)
    }
    return 'put'
  }

  async putBytes(relPath: string, bytes: Buffer): Promise<void> {
    const dest = this.localPath(relPath)
    await mkdir(dirname(dest), { recursive: true })
    await writeFileAtomic(dest, bytes).catch((err: unknown) => {
      throw asSnapshotError(err, `writing ${dest}`)
    })
  }

  async putPointer(bytes: Buffer): Promise<void> {
    await mkdir(this.root, { recursive: true })
    await writeFileAtomic(join(this.root, LATEST), bytes).catch((err: unknown) => {
      throw asSnapshotError(err, `writing ${join(this.root, LATEST)}`)
    })
  }

  async delete(relPath: string): Promise<void> {
    const file = this.localPath(relPath)
    await rm(file, { force: true }).catch((err: unknown) => {
      throw asSnapshotError(err, `deleting ${file}`)
    })
    fsyncDir(dirname(file))
  }

  close(): void {}
}
