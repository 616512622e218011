import { randomUUID } from 'node:crypto'
import { openSync, readSync, unlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'

/**
 * A file a build keeps data in instead of memory (early-reads.ts, whole-tree-index.ts, and the
 * output of the scan's finds ahead of their turn, parallel-find.ts): made in `dir` (the store, not
 * a /tmp that may be tmpfs, which would be memory again) and unlinked as soon as it is opened, so
 * nothing is left behind whatever happens to the build; its pages go with its descriptor. Its name
 * (`.NAME.UUID.tmp`) is a temp file's, which a later build removes in the moment between open and
 * unlink.
 */
export function openScratchFile(dir: string, name: string): number {
  const path = join(dir, `.${name}.${randomUUID()}.tmp`)
  const fd = openSync(path, 'wx+', 0o600)
  unlinkSync(path)
  return fd
}

/** Writes `length` bytes of `buf` at `position`, however many calls it takes. */
export function writeAt(fd: number, buf: Buffer, length: number, position: number): void {
  for (let done = 0; done < length; ) done += writeSync(fd, buf, done, length - done, position + done)
}

/** Reads `length` bytes at `position` into `into`; the file ending sooner is a bug of its writer. */
export function readAt(fd: number, into: Buffer, length: number, position: number, what: string): void {
  let done = 0
  for (let n; done < length && (n = readSync(fd, into, done, length - done, position + done)) > 0; ) done += n
  if (done < length) throw new Error(`internal: ${what} ends at ${position + done}, before ${position + length}`)
}
