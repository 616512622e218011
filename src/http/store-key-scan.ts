/**
 * The check `snapshot serve` makes before it listens: a store that holds a private key is refused,
 * so a signing key put in the wrong directory is never one request away from the world.
 */
import { constants as fsConstants, type Dirent } from 'node:fs'
import { open, readdir, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { asSnapshotError, PrivateKeyInStoreError } from '../core/errors.js'
import { SERVED_OBJECT } from './static-request.js'

/** Anywhere in a file, any case: a key pasted after a comment or a bag attribute is a key still. */
const PRIVATE_KEY_PEM = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/i
const KEY_SCAN_CHUNK = 64 * 1024
const KEY_SCAN_MAX_DEPTH = 16
const KEY_SCAN_CONCURRENCY = 16

/**
 * Refuses a store that holds a private key, by name (`*.key`) and by content (a PEM private key
 * block, any case, anywhere in the file), whatever else the file is called: a key renamed
 * `objects/k.KEY` or `objects/sub/renamed.pem` is still a key. Cheap at start: content-named
 * objects (the thousands, and large) are judged by their names, which are their sha256; every
 * other file is read. Dot-entries are skipped: never served (the master's `.state/` lives there).
 * Symlinks are not followed (a request re-checks where they lead).
 */
export async function assertNoPrivateKeys(root: string): Promise<void> {
  const toRead: string[] = []
  const walk = async (dir: string, rel: string, depth: number): Promise<void> => {
    let entries: Dirent[]
    try {
      entries = await readdir(dir, { withFileTypes: true })
    } catch (err) {
      throw asSnapshotError(err, `cannot list ${dir}`)
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue
      const relName = rel === '' ? e.name : `${rel}/${e.name}`
      if (e.name.toLowerCase().endsWith('.key')) throw new PrivateKeyInStoreError(relName, 'is named like a key file')
      if (e.isDirectory() && depth < KEY_SCAN_MAX_DEPTH) {
        await walk(join(dir, e.name), relName, depth + 1)
      } else if (e.isFile() && !(rel === 'objects' && SERVED_OBJECT.test(e.name))) {
        toRead.push(relName)
      }
    }
  }
  await walk(root, '', 0)

  let next = 0
  const worker = async (): Promise<void> => {
    while (next < toRead.length) {
      const relName = toRead[next++] as string
      if (await holdsPrivateKey(join(root, ...relName.split('/')))) {
        throw new PrivateKeyInStoreError(relName, 'holds a PEM private key')
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(KEY_SCAN_CONCURRENCY, toRead.length) }, worker))
}

/** Reads the whole file in chunks, keeping the tail of each so a marker cut in two is still seen. */
async function holdsPrivateKey(file: string): Promise<boolean> {
  let fh: FileHandle | undefined
  try {
    fh = await open(file, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0))
    if (!(await fh.stat()).isFile()) return false
    const buf = Buffer.alloc(KEY_SCAN_CHUNK)
    let tail = ''
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos)
      if (bytesRead === 0) return false
      pos += bytesRead
      const text = tail + buf.subarray(0, bytesRead).toString('latin1')
      if (PRIVATE_KEY_PEM.test(text)) return true
      tail = text.slice(-80)
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ELOOP') return false // removed while we scanned, or a symlink: not followed
    throw asSnapshotError(err, `cannot check ${file} for private keys`)
  } finally {
    await fh?.close()
  }
}
