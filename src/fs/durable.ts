import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { closeSync, fsyncSync, openSync } from 'node:fs'
import { open, rename, rm, symlink, writeFile, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { crashPoint } from './crash-points.js'

/**
 * The one module that owns durability: atomic writes, fsync of files and directories, and the
 * symlink swap. Nobody else renames into place. Order, as docs/FORMAT.md explains: data is
 * flushed before the rename that publishes it, and the directory after, or a power cut could
 * keep the name and lose the bytes.
 */

export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomUUID()}.tmp`) // same dir: rename is atomic
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Flushes a file already in place, and its directory entry. */
export async function flushFile(path: string): Promise<void> {
  const handle = await open(path, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
  fsyncDir(dirname(path))
}

/** Readers see the old bytes or the new ones, never a torn file. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = tempPathFor(path)
  try {
    await writeFile(tmp, data, { flag: 'wx', mode, flush: true })
    crashPoint('file:written')
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
  crashPoint('file:renamed')
  fsyncDir(dirname(path))
}

/**
 * A file written piece by piece and published whole: `write` fills the temp file, then it is
 * flushed and renamed onto `path` (or onto the name `write` returns, for content-named objects).
 * On any error the temp file is removed and nothing appears.
 */
export async function writeStreamAtomic<T>(
  path: string,
  write: (handle: FileHandle, tmpPath: string) => Promise<{ result: T; finalPath?: string }>,
): Promise<{ result: T; finalPath: string }> {
  const tmp = tempPathFor(path)
  let handle: FileHandle | undefined
  try {
    handle = await open(tmp, 'wx', 0o644)
    const { result, finalPath = path } = await write(handle, tmp)
    await handle.sync()
    await handle.close()
    handle = undefined
    crashPoint('stream:written')
    await rename(tmp, finalPath)
    crashPoint('stream:renamed')
    fsyncDir(dirname(finalPath))
    return { result, finalPath }
  } catch (err) {
    await handle?.close().catch(() => undefined)
    await rm(tmp, { force: true })
    throw err
  }
}

/**
 * Points `linkPath` at `target` by renaming a new link over the old one: a reader resolving the
 * path sees the old tree or the new one, with no moment where the name is missing (`ln -sfn`
 * unlinks first and leaves that gap).
 */
export async function swapSymlink(linkPath: string, target: string): Promise<void> {
  const tmp = tempPathFor(linkPath)
  try {
    await symlink(target, tmp)
    crashPoint('symlink:made')
    await rename(tmp, linkPath)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
  crashPoint('symlink:renamed')
  fsyncDir(dirname(linkPath))
}

/**
 * Flushes a whole tree at once. syncfs(2) through `sync -f` costs one call for any number of
 * files, where an fsync per file would cost one disk flush each; falls back to a global sync.
 */
export function syncFilesystem(path: string): void {
  const r = spawnSync('sync', ['-f', path], { stdio: 'ignore' })
  if (r.status !== 0) spawnSync('sync', [], { stdio: 'ignore' })
}

/**
 * Keeps one `sync -f` of a filesystem in flight while a large tree is being written, so that its
 * writeback runs beside the writing (the kernel's flusher on the other core, the disk) rather than
 * all at once in the syncFilesystem before the swap; left alone, the kernel would not start it
 * for 30 s. It does not replace that final syncFilesystem, which is what makes the tree durable.
 *
 * One small shell runs the syncs, each asked for by a line on its stdin and answered by one on its
 * stdout: a `sync -f` spawned from the pull itself for each forked the pull's whole process (~180
 * MiB at 1M files), ~240 times a tree, and cost its thread ~7% of a 1M full pull (`--cpu-prof`).
 */
export class BackgroundFlush {
  private shell: ChildProcess | null = null
  private broken = false
  /** Resolves the flush in flight, if any. */
  private finish: (() => void) | null = null
  private running: Promise<void> | null = null

  constructor(private readonly path: string) {}

  /** Starts a flush unless one is still running. */
  nudge(): void {
    if (this.running || this.broken) return
    const shell = this.shell ?? this.startShell()
    this.running = new Promise<void>((done) => (this.finish = done))
    shell.stdin!.write('\n')
  }

  /** Waits for the flush in flight, if any. */
  async settle(): Promise<void> {
    await this.running
  }

  /** Waits for the flush in flight and ends the shell; call it whatever happened to the writing. */
  async close(): Promise<void> {
    await this.settle()
    const shell = this.shell
    if (!shell || shell.exitCode !== null || shell.signalCode !== null) return
    await new Promise<void>((done) => {
      shell.once('close', () => done())
      shell.stdin!.end()
    })
  }

  private startShell(): ChildProcess {
    // $0 is the path: any bytes, never parsed by the shell. A failed sync -f falls back to sync.
    const shell = spawn('sh', ['-c', 'while read -r _; do sync -f "$0" 2>/dev/null || sync; echo; done', this.path], { stdio: ['pipe', 'pipe', 'ignore'] })
    shell.stdin!.on('error', () => undefined) // the shell gone: 'close' below says so
    shell.stdout!.on('data', (d: Buffer) => {
      for (let n = d.length; n > 0; n--) this.settled() // a line per flush done
    })
    // No shell, or it died: no more background flushes; the final syncFilesystem flushes all the same.
    const gone = (): void => {
      this.broken = true
      this.settled()
    }
    shell.once('error', gone)
    shell.once('close', gone)
    this.shell = shell
    return shell
  }

  private settled(): void {
    const finish = this.finish
    this.finish = null
    this.running = null
    finish?.()
  }
}
