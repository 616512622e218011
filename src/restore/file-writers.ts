import { Worker } from 'node:worker_threads'
import { VerifyError } from '../core/errors.js'
import { FileBatchBuilder, UNLINK, writeBatch, type BatchFailure, type FileBatch } from './file-batch.js'
import type { BatchAnswer } from './file-writer-thread.js'
import { verifyBatch, type VerifyBatch } from './verify-batch.js'

/**
 * Writes an apply's small files from several threads at once. Creating, unlinking and closing a
 * file each wait on the file system, not on the CPU: one thread writing 20,000 files one after
 * another spends most of its time waiting, while four threads keep four directories' writes in
 * flight (BENCHMARKS.md, "Parallel writers"). The apply thread goes on decompressing and checking
 * the archive meanwhile.
 *
 * Files arrive in archive order and leave in batches (file-batch.ts); batches may land in any
 * order, which is safe because an archive names every path once and a directory before what is in
 * it: the apply makes the directories itself, before it hands over the files below them. Threads
 * start only when there is work for them (an apply of a few dozen files writes them itself), at
 * most `threads`, each with at most two batches in hand. Every write is done, or has failed, when
 * `drain` returns; the first failure is thrown there, or by `room`, as the system call threw it.
 *
 * Once the files are written, the same threads check the paths the apply touched (`verify`,
 * verify-batch.ts); a path found other than it should be is thrown as a VerifyError.
 */
export interface FileWritersOptions {
  /** Writer threads at most; 0 writes every file on the calling thread. */
  readonly threads: number
  readonly atime: number
  readonly intoEmptyTree: boolean
}

/**
 * Writer threads by default. At 200,000 files a pull's hour (21,000 files) reached its swap in
 * 0.39x the time with 8 threads than with none, and 4 were as fast as 8; each thread costs ~9 MiB
 * (its own V8 isolate), so 4 (BENCHMARKS.md, "Parallel writers").
 */
export const DEFAULT_WRITER_THREADS = 4

/** A batch: 64 files of a few hundred bytes, in 64 KiB; a larger file is written directly by the apply. */
const BATCH_FILES = 64
const BATCH_BYTES = 64 << 10
/** Batches each thread holds: one being written, one waiting, so it never idles between messages. */
const PER_THREAD = 2

interface WriterThread {
  readonly worker: Worker
  inHand: number
}

export class FileWriters {
  private readonly builder: FileBatchBuilder
  private readonly threads: WriterThread[] = []
  private readonly waiting: Array<FileBatch | VerifyBatch> = []
  private readonly directories: string[] = []
  private sealed = 0
  private cannotStart = false
  private failure: Error | null = null
  private wake: (() => void) | null = null

  constructor(readonly options: FileWritersOptions) {
    this.builder = new FileBatchBuilder(BATCH_BYTES, BATCH_FILES, options.atime, options.intoEmptyTree, (b) => this.hand(b))
  }

  /** Whether a file of this size at this path (a byte string) is batched; a larger one the caller writes itself. */
  takes(path: string, size: number): boolean {
    return this.builder.fits(path.length, size)
  }

  begin(path: string, size: number, mode: number, mtime: number): void {
    this.builder.begin(path, size, mode, mtime)
  }

  data(chunk: Buffer): void {
    this.builder.data(chunk)
  }

  end(): void {
    this.builder.end()
  }

  /**
   * Unlinks a file or a symlink. A directory found at the path is left standing: `drain` returns
   * it, with the others, for the caller to remove once what it held is gone.
   */
  unlink(path: string): void {
    this.builder.begin(path, 0, UNLINK, 0)
    this.builder.end()
  }

  /** After the writes: a batch of paths to check (verify-batch.ts); `drain` waits for it too. */
  verify(batch: VerifyBatch): void {
    this.hand(batch)
  }

  /** Null while there is room for more; else a promise that settles when there is (or a write failed). */
  room(): Promise<void> | null {
    if (this.failure) return Promise.reject(this.failure)
    if (this.waiting.length <= this.options.threads * PER_THREAD) return null
    return this.until(() => this.waiting.length <= this.options.threads * PER_THREAD)
  }

  /**
   * Every file handed over is written (or the first failure is thrown). Returns the paths handed
   * to `unlink` since the last drain that were directories (byte strings), left standing.
   */
  async drain(): Promise<string[]> {
    this.builder.seal()
    if (this.threads.length === 0) this.writeHere() // too few files to be worth a thread
    await this.until(() => this.waiting.length === 0 && this.inHand() === 0)
    if (this.failure) throw this.failure
    return this.directories.splice(0)
  }

  /** Waits for the batches in hand to land, then stops the threads: nothing writes after this. */
  async close(): Promise<void> {
    this.waiting.length = 0
    await this.until(() => this.inHand() === 0, false)
    await Promise.all(this.threads.map((t) => t.worker.terminate()))
    this.threads.length = 0
  }

  private hand(batch: FileBatch | VerifyBatch): void {
    this.waiting.push(batch)
    // Checks start no thread: an apply too small to have started one checks its few paths here.
    if (this.options.threads === 0 || ('verify' in batch && this.threads.length === 0)) return this.writeHere()
    // The first batch waits: an apply of a few dozen files is written on the calling thread.
    if (++this.sealed >= 2) this.dispatch()
  }

  private dispatch(): void {
    while (this.waiting.length > 0 && !this.failure) {
      let thread = this.threads.find((t) => t.inHand === 0) ?? null
      if (!thread && this.threads.length < this.options.threads && !this.cannotStart) thread = this.tryStart()
      thread ??= this.threads.find((t) => t.inHand < PER_THREAD) ?? null
      if (!thread) {
        if (this.threads.length === 0) this.writeHere() // the system gave no thread at all (a task limit)
        return
      }
      const batch = this.waiting.shift()!
      thread.inHand++
      thread.worker.postMessage(batch, [batch.bytes.buffer as ArrayBuffer, batch.meta.buffer as ArrayBuffer])
    }
  }

  /** The waiting batches written on this thread, in order, as with --writers 0. */
  private writeHere(): void {
    for (const batch of this.waiting.splice(0)) this.check('verify' in batch ? verifyBatch(batch) : writeBatch(batch, this.directories))
  }

  private tryStart(): WriterThread | null {
    try {
      return this.start()
    } catch {
      this.cannotStart = true // the threads there are (or this one) do the writing
      return null
    }
  }

  private start(): WriterThread {
    const worker = new Worker(new URL('./file-writer-thread.js', import.meta.url))
    const thread: WriterThread = { worker, inHand: 0 }
    worker.on('message', (answer: BatchAnswer) => {
      thread.inHand--
      this.check(answer.failure)
      this.directories.push(...answer.directories)
      this.dispatch()
      this.wake?.()
    })
    worker.on('error', (err) => {
      // The thread itself died (not a write that failed): what it held is lost, so the apply fails.
      this.failure ??= err
      this.threads.splice(this.threads.indexOf(thread), 1)
      this.wake?.()
    })
    this.threads.push(thread)
    return thread
  }

  private check(failure: BatchFailure | null): void {
    if (failure && !this.failure) {
      this.failure = failure.verify ? new VerifyError(failure.message) : Object.assign(new Error(failure.message), { code: failure.code, path: failure.path })
    }
  }

  private inHand(): number {
    let n = 0
    for (const t of this.threads) n += t.inHand
    return n
  }

  /** Resolves once `done()` holds; unless told to wait regardless, rejects as soon as a write has failed. */
  private until(done: () => boolean, stopOnFailure = true): Promise<void> {
    return new Promise((resolve, reject) => {
      const look = (): void => {
        if (stopOnFailure && this.failure) return reject(this.failure)
        if (!done()) return
        this.wake = null
        resolve()
      }
      this.wake = look
      look()
    })
  }
}
