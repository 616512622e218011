import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'
import { sha256Digest } from '../core/sha256.js'
import { sizeOfSig, statSignature } from '../fs/stat-signature.js'

/**
 * Small source files to read for a build, as one message to a reader thread (read-ahead.ts), and
 * what comes back. A file is read at four system calls (open, read, fstat, close) into one buffer
 * holding the whole batch, and hashed there; it counts only if the fstat after the read gives the
 * scan's stat signature, as source-reader.ts's fast path demands. Anything else (a file rewritten,
 * gone, grown, a permission refused) comes back unread, and the build reads it itself, through
 * the careful path that says what happened.
 */
export interface ReadJobs {
  /** The source root as a byte string (byte-path.ts); paths are relative to it. */
  readonly root: string
  /**
   * Each file's path (a byte string) and the scan's stat signature, as `path NUL sig NUL`: one
   * buffer crosses to a thread as it is (transferred), where arrays of strings cost a structured
   * clone each (0.56 s of a 200,000-file full build's thread).
   */
  readonly list: Uint8Array
  readonly count: number
  /** The open flag for "leave the atime alone", or 0 where the system refused it (source-reader.ts). */
  readonly noAtime: number
}

export interface ReadResults {
  /** The files' bytes back to back. */
  readonly bytes: Uint8Array
  /** Per file: where its bytes end in `bytes` (they start where the last file read before it ends), or NOT_READ. */
  readonly ends: Int32Array
  /** Per file read: its sha256, 32 bytes each. */
  readonly sha256: Uint8Array
  /** Per file read: the later of its mtime and ctime, in ns (for the racy check). */
  readonly changedNs: BigInt64Array
  /** The flag still in use: O_NOATIME turns to 0 once refused. */
  readonly noAtime: number
}

/** The list a batch of files travels as (ReadJobs.list). */
export function encodeReadList(paths: readonly string[], sigs: readonly string[]): Uint8Array {
  let n = 0
  for (let i = 0; i < paths.length; i++) n += paths[i]!.length + sigs[i]!.length + 2
  const list = Buffer.allocUnsafeSlow(n)
  let at = 0
  for (let i = 0; i < paths.length; i++) {
    at += list.write(paths[i]!, at, 'latin1')
    list[at++] = 0
    at += list.write(sigs[i]!, at, 'latin1')
    list[at++] = 0
  }
  return list
}

export const NOT_READ = -1
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW

/** Reads every file of the batch it can prove unchanged since the scan. Synchronous: a thread's work. */
export function readBatch(jobs: ReadJobs): ReadResults {
  const list = Buffer.from(jobs.list.buffer, jobs.list.byteOffset, jobs.list.byteLength)
  const count = jobs.count
  const root = Buffer.from(`${jobs.root}/`, 'latin1')
  const paths: Buffer[] = []
  const sigs: string[] = []
  let capacity = 1 // one byte more than the sizes: a file that grew shows up as a longer read
  for (let at = 0, i = 0; i < count; i++) {
    const pathEnd = list.indexOf(0, at)
    const sigEnd = list.indexOf(0, pathEnd + 1)
    paths.push(Buffer.concat([root, list.subarray(at, pathEnd)]))
    sigs.push(list.toString('latin1', pathEnd + 1, sigEnd))
    capacity += sizeOfSig(sigs[i]!)
    at = sigEnd + 1
  }
  const bytes = Buffer.allocUnsafeSlow(capacity)
  const ends = new Int32Array(count).fill(NOT_READ)
  const sha256 = new Uint8Array(32 * count)
  const changedNs = new BigInt64Array(count)
  let noAtime = jobs.noAtime
  let used = 0
  for (let i = 0; i < count; i++) {
    const sig = sigs[i]!
    const size = sizeOfSig(sig)
    let fd: number
    try {
      fd = openSync(paths[i]!, READ_FLAGS | noAtime)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EPERM' && noAtime !== 0) {
        noAtime = 0 // another owner's file: no O_NOATIME from now on, and this one again without it
        i--
      }
      continue
    }
    try {
      const n = readSync(fd, bytes, used, size + 1, 0)
      const st = fstatSync(fd, { bigint: true })
      if (n !== size || statSignature(st) !== sig) continue
      sha256.set(sha256Digest(bytes.subarray(used, used + n)), 32 * i)
      changedNs[i] = st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs
      used += n
      ends[i] = used
    } catch {
      // Read again on the build's thread, which says why it failed.
    } finally {
      closeSync(fd)
    }
  }
  return { bytes: bytes.subarray(0, used), ends, sha256, changedNs, noAtime }
}
