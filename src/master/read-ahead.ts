import { Worker } from 'node:worker_threads'
import { sizeOfSig } from '../fs/stat-signature.js'
import { encodeReadList, NOT_READ, type ReadJobs, type ReadResults } from './read-batch.js'
import type { SourceFiles, SourceRead, SourceReader } from './source-reader.js'

/**
 * Reads a build's small source files on threads, ahead of the packing that needs them in order.
 * A full build at 200,000 files spent 2.75 s of its 5.5 s on one thread in open, read, fstat and
 * close, while `tar | zstd` packs the same tree in 1.9 s all told (BENCHMARKS.md, "Reader
 * threads"): those calls wait on the file system more than on the CPU, so threads keep several in
 * flight, and hash what they read, while the build's thread packs and compresses.
 *
 * The caller names the files it will read, in its order (`next`); batches of them go to the
 * threads, at most a few in hand at once, and come back in any order. Before each read the caller
 * waits for `arrive(path)`; `read` then returns the thread's result, or, for a file the thread did
 * not read (too large for a batch, rewritten since the scan, gone, refused), the reader's own read
 * of it, which says what became of it. A file counts only if it still has the scan's stat
 * signature after its read (read-batch.ts): the same proof as the reader's own.
 */
export interface ReadAheadOptions {
  /** Reader threads at most; 0 reads every file on the calling thread, through the reader. */
  readonly threads: number
}

/**
 * Reader threads by default. At 200,000 files a full build took 4.5-5.4 s with none, 3.8-4.2 s
 * with 2 and 4.0-4.5 s with 4, on two cores; each thread costs ~10 MiB (its own V8 isolate), so 2
 * (BENCHMARKS.md, "Reader threads").
 */
export const DEFAULT_READER_THREADS = 2

/** A batch: up to 64 files in up to 256 KiB; larger files are read by the caller's reader. */
const BATCH_FILES = 64
const BATCH_BYTES = 256 << 10
/** Batches in hand per thread: one being read, one waiting. */
const PER_THREAD = 2

/** A file the caller will read: its path (a byte string) and the scan's stat signature. */
export interface ReadJob {
  readonly path: string
  readonly sig: string
}

interface Batch {
  readonly paths: string[]
  readonly sigs: string[]
  results: ReadResults | null
  /** Set when its thread died or could not start: the caller reads these files itself. */
  lost: boolean
  done: Promise<void>
  settle: () => void
}

interface ReaderThread {
  readonly worker: Worker
  readonly batches: Batch[]
}

export class ReadAhead implements SourceFiles {
  /** Batches in the caller's order, from the one being consumed to the last one sent. */
  private readonly queue: Batch[] = []
  /** Within queue[0]: the next file to hand out. */
  private at = 0
  private readonly threads: ReaderThread[] = []
  private cannotStart = false
  private nextJob: ReadJob | null = null
  private exhausted = false
  /** A batch made while no thread had room, sent first when one has. */
  private unsent: Batch | null = null
  /** Files handed out as a thread read them. */
  readOnThreads = 0
  /** Threads started so far: none until there is a batch to read. */
  threadsStarted = 0

  constructor(
    private readonly reader: SourceReader,
    /** The files the caller will read, in its order; null after the last. */
    private readonly next: () => ReadJob | null,
    private readonly options: ReadAheadOptions = { threads: DEFAULT_READER_THREADS },
  ) {}

  /** Resolves once the read of `path` is back, if a thread reads it; keeps the threads busy. */
  async arrive(path: string): Promise<void> {
    this.fill()
    this.skipTo(path)
    const head = this.queue[0]
    if (head && !head.results && !head.lost && head.paths[this.at] === path) await head.done
  }

  /** The file's bytes as the thread read them, or the reader's own read. */
  read(path: string, scanSig: string): SourceRead {
    this.skipTo(path)
    const head = this.queue[0]
    if (!head || head.paths[this.at] !== path || head.sigs[this.at] !== scanSig || !head.results) return this.reader.read(path, scanSig)
    const r = head.results
    const i = this.at++
    const end = r.ends[i]!
    if (end === NOT_READ) return this.reader.read(path, scanSig)
    let start = 0 // where the last file read before it ends
    for (let j = i - 1; j >= 0 && start === 0; j--) if (r.ends[j]! !== NOT_READ) start = r.ends[j]!
    this.reader.filesRead++
    this.readOnThreads++
    const b = r.bytes
    const sha256 = Buffer.from(r.sha256.buffer, r.sha256.byteOffset, r.sha256.byteLength).toString('hex', 32 * i, 32 * i + 32)
    return { data: Buffer.from(b.buffer, b.byteOffset + start, end - start), sig: scanSig, changedNs: r.changedNs[i]!, sha256 }
  }

  /** Stops the threads: nothing reads after this. */
  async close(): Promise<void> {
    const threads = this.threads.splice(0)
    await Promise.all(threads.map((t) => t.worker.terminate()))
  }

  /** Drops batches, and files within the head batch, that come before `path` in the caller's order. */
  private skipTo(path: string): void {
    for (;;) {
      const head = this.queue[0]
      if (!head) return
      while (this.at < head.paths.length && head.paths[this.at]! < path) this.at++
      if (this.at < head.paths.length) return
      this.queue.shift()
      this.at = 0
      this.fill()
    }
  }

  /**
   * Sends batches until every thread holds its share, or the caller's files run out. The batch
   * comes first: a thread starts only for files to read (a delta build whose files were all read
   * during the scan starts none, ~10 MiB each).
   */
  private fill(): void {
    if (this.options.threads === 0) return
    while (this.queue.length < this.options.threads * PER_THREAD + 1) {
      const batch = this.unsent ?? this.nextBatch()
      if (!batch) return
      const thread = this.threadWithRoom()
      this.unsent = thread ? null : batch
      if (!thread) return
      this.queue.push(batch)
      thread.batches.push(batch)
      const jobs: ReadJobs = { root: this.reader.root, list: encodeReadList(batch.paths, batch.sigs), count: batch.paths.length, noAtime: this.reader.noAtime }
      thread.worker.postMessage(jobs, [jobs.list.buffer as ArrayBuffer])
    }
  }

  /** The next files that fit a batch; a file too large for one is left to the caller's reader. */
  private nextBatch(): Batch | null {
    if (this.exhausted) return null
    const paths: string[] = []
    const sigs: string[] = []
    let bytes = 0
    for (;;) {
      const job = this.nextJob ?? this.next()
      this.nextJob = null
      if (!job) {
        this.exhausted = true
        break
      }
      const size = sizeOfSig(job.sig)
      if (size >= BATCH_BYTES) continue
      if (paths.length > 0 && (bytes + size >= BATCH_BYTES || paths.length === BATCH_FILES)) {
        this.nextJob = job
        break
      }
      paths.push(job.path)
      sigs.push(job.sig)
      bytes += size
    }
    if (paths.length === 0) return null
    let settle = (): void => undefined
    const done = new Promise<void>((resolve) => (settle = resolve))
    return { paths, sigs, results: null, lost: false, done, settle }
  }

  private threadWithRoom(): ReaderThread | null {
    const idle = this.threads.find((t) => t.batches.length === 0)
    if (idle) return idle
    if (this.threads.length < this.options.threads && !this.cannotStart) {
      try {
        return this.start()
      } catch {
        this.cannotStart = true // the threads there are (or the caller's reader) do the reading
      }
    }
    return this.threads.find((t) => t.batches.length < PER_THREAD) ?? null
  }

  private start(): ReaderThread {
    const worker = new Worker(new URL('./reader-thread.js', import.meta.url))
    const thread: ReaderThread = { worker, batches: [] }
    worker.on('message', (results: ReadResults) => {
      const batch = thread.batches.shift()!
      batch.results = results
      if (results.noAtime === 0) this.reader.noAtime = 0
      batch.settle()
      this.fill()
    })
    worker.on('error', () => {
      // The thread died: what it held is read by the caller's reader, as if never sent.
      this.threads.splice(this.threads.indexOf(thread), 1)
      this.cannotStart = true
      for (const b of thread.batches.splice(0)) {
        b.lost = true
        b.settle()
      }
    })
    this.threads.push(thread)
    this.threadsStarted++
    return thread
  }
}
