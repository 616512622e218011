import { closeSync, constants, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs'
import { FileChangingError } from '../core/errors.js'

/**
 * Reads a whole file and proves nobody wrote it meanwhile: size, mtime and ctime must be the same
 * after the read as before, or it is read again. What a build hashes is exactly what it packs.
 * Symlinks are never followed (O_NOFOLLOW).
 */
export interface StableRead {
  readonly data: Buffer
  readonly stat: BigIntStats
}

const MAX_ATTEMPTS = 5

export function readFileStable(path: string | Buffer): StableRead {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW)
  try {
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      const before = fstatSync(fd, { bigint: true })
      if (!before.isFile()) throw new FileChangingError(`${path} is no longer a regular file`)
      const data = readAll(fd, Number(before.size))
      const after = fstatSync(fd, { bigint: true })
      if (after.size === before.size && after.mtimeNs === before.mtimeNs && after.ctimeNs === before.ctimeNs && BigInt(data.length) === after.size) {
        return { data, stat: after }
      }
    }
    throw new FileChangingError(`${path} kept changing while it was read (${MAX_ATTEMPTS} attempts)`)
  } finally {
    closeSync(fd)
  }
}

function readAll(fd: number, expected: number): Buffer {
  let buf = Buffer.allocUnsafe(expected + 1) // one spare byte: the read that finds EOF needs no regrowth
  let used = 0
  for (;;) {
    if (used === buf.length) {
      const bigger = Buffer.allocUnsafe(buf.length * 2)
      buf.copy(bigger)
      buf = bigger
    }
    const n = readSync(fd, buf, used, buf.length - used, used)
    if (n === 0) return buf.subarray(0, used)
    used += n
  }
}
