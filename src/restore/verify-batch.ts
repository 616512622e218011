import { chmodSync, lstatSync, type Stats } from 'node:fs'
import { quotePath } from '../core/byte-path.js'
import type { BatchFailure } from './file-batch.js'

/**
 * Paths an apply touched, each with what it should now be, checked on the writer threads
 * (verifyApplied, apply-archive.ts). Packed as file-batch.ts packs files, so a batch crosses to a
 * thread without a copy and without an object per path: `bytes` holds the absolute paths (raw
 * bytes) back to back, `meta` per path FIELDS numbers: where it starts, where it ends, what it
 * should be (GONE, FILE, DIR, LINK), its mode and its size.
 *
 * Why threads: one lstat per touched path, in order on the pull's thread, was ~7 s of a full pull
 * at 1M before its swap (--cpu-prof); the writer threads are idle by then.
 */
export interface VerifyBatch {
  readonly verify: true
  readonly bytes: Uint8Array
  readonly meta: Float64Array
  readonly count: number
  /** Bytes of the tree's root and the '/' after it: what error messages leave out of a path. */
  readonly rootLength: number
}

export const GONE = 0
export const FILE = 1
export const DIR = 2
export const LINK = 3

const FIELDS = 5
/** A batch: 512 paths, in 64 KiB (a path the kernel takes is under 4 KiB). */
const MAX_PATHS = 512
const CAPACITY = 64 << 10

/** Fills batches of at most CAPACITY bytes of paths and MAX_PATHS paths; `onSealed` takes each. */
export class VerifyBatchBuilder {
  private bytes = Buffer.allocUnsafeSlow(CAPACITY)
  private meta: number[] = []
  private used = 0

  /** `rootLength`: bytes of the tree's root and the '/' after it, left out of error messages. */
  constructor(
    private readonly rootLength: number,
    private readonly onSealed: (batch: VerifyBatch) => void,
  ) {}

  /** `path` is an absolute byte string (byte-path.ts); mode and size count only for what they apply to. */
  add(path: string, expect: number, mode: number, size: number): void {
    if (this.used + path.length > CAPACITY) this.seal()
    const start = this.used
    this.used += this.bytes.write(path, start, 'latin1')
    this.meta.push(start, this.used, expect, mode, size)
    if (this.meta.length >= MAX_PATHS * FIELDS) this.seal()
  }

  seal(): void {
    if (this.meta.length === 0) return
    this.onSealed({ verify: true, bytes: this.bytes.subarray(0, this.used), meta: Float64Array.from(this.meta), count: this.meta.length / FIELDS, rootLength: this.rootLength })
    this.bytes = Buffer.allocUnsafeSlow(CAPACITY) // the sealed one travels to a thread
    this.meta = []
    this.used = 0
  }
}

/**
 * Checks every path of a batch against what it should be; a regular file whose permission bits
 * differ is given its mode first (the apply creates files with their mode less the umask, and a
 * file written over in place keeps its old mode). The first path that is not as it should be is
 * the failure, with the message the apply throws as a VerifyError.
 *
 * The caller has proven every path's parent a real directory under the root: lstat follows
 * nothing at the end, and the chmod acts on the regular file lstat just saw.
 */
export function verifyBatch(batch: VerifyBatch): BatchFailure | null {
  const buf = Buffer.from(batch.bytes.buffer, batch.bytes.byteOffset, batch.bytes.byteLength)
  const m = batch.meta
  for (let i = 0; i < batch.count; i++) {
    const at = i * FIELDS
    const path = buf.subarray(m[at]!, m[at + 1]!)
    const problem = problemWith(path, m[at + 2]!, m[at + 3]!, m[at + 4]!)
    if (problem !== null) {
      const rel = path.subarray(batch.rootLength).toString('latin1')
      return { path: path.toString('latin1'), code: undefined, message: `after applying: ${quotePath(rel)} ${problem}`, verify: true }
    }
  }
  return null
}

function problemWith(path: Buffer, expect: number, mode: number, size: number): string | null {
  let st: Stats
  try {
    st = lstatSync(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if ((code === 'ENOENT' || code === 'ENOTDIR') && expect === GONE) return null
    return `is missing (${code ?? String(err)})`
  }
  if (expect === GONE) return 'should be deleted but is still there'
  if (expect === FILE && st.isFile() && (st.mode & 0o7777) !== mode) {
    chmodSync(path, mode)
    st = lstatSync(path)
  }
  const ok =
    expect === FILE ? st.isFile() && st.size === size && (st.mode & 0o7777) === mode
    : expect === DIR ? st.isDirectory() && (st.mode & 0o7777) === mode
    : st.isSymbolicLink()
  return ok ? null : 'is not what the manifest says'
}
