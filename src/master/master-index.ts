import { createReadStream } from 'node:fs'
import { SnapshotError } from '../core/errors.js'
import type { TreeEntry } from '../core/tree-entry.js'
import { writeStreamAtomic } from '../fs/durable.js'

/**
 * The master's memory between builds: for every path, the stat signature it had and its content
 * hash (or link target). A path whose signature is unchanged is not read again. One string per
 * path keeps a million entries small and quick to load; the file is a run of NUL-terminated
 * `path` / `value` pairs after one header line, binary-safe for any name.
 *
 * value = `${statSig}\t${sha256 | link target | ''}`, where statSig starts with type and octal
 * mode (see tree-scan.ts). A signature of RACY never matches, so the path is read again.
 */
export type MasterIndex = Map<string, string>
export const RACY_SIG = 'racy'
const HEADER = 'playlist-snapshot-index/1'

export function indexValue(statSig: string, payload: string): string {
  return `${statSig}\t${payload}`
}
export function sigOf(value: string): string {
  return value.slice(0, value.indexOf('\t'))
}
export function payloadOf(value: string): string {
  return value.slice(value.indexOf('\t') + 1)
}

/** The tree entry an index value stands for (type and mode lead the stat signature). */
export function entryFromIndex(path: string, value: string): TreeEntry {
  const tab = value.indexOf('\t')
  const type = value[0]
  const space = value.indexOf(' ')
  const mode = parseInt(value.slice(1, space < 0 || space > tab ? tab : space), 8)
  const payload = value.slice(tab + 1)
  if (type === 'f') return { type: 'f', path, mode, size: Number(value.slice(space + 1, value.indexOf(' ', space + 1))), sha256: payload }
  if (type === 'd') return { type: 'd', path, mode }
  if (type === 'l') return { type: 'l', path, target: payload }
  throw new SnapshotError(`index entry for ${path} has unknown type '${type}'`)
}

/** A value that keeps the entry's type, mode, size and payload but never matches a scan again. */
export function racyValue(value: string): string {
  const parts = sigOf(value).split(' ')
  return indexValue(`${parts[0]} ${parts[1]} ${RACY_SIG}`, payloadOf(value))
}

export async function writeIndex(file: string, id: number, index: MasterIndex): Promise<void> {
  await writeStreamAtomic(file, async (handle) => {
    const parts: Buffer[] = [Buffer.from(`${HEADER} ${id} ${index.size}\n`)]
    let pending = parts[0]!.length
    for (const [path, value] of index) {
      const b = Buffer.from(`${path}\0${value}\0`)
      parts.push(b)
      pending += b.length
      if (pending > 4 << 20) {
        await handle.write(Buffer.concat(parts))
        parts.length = 0
        pending = 0
      }
    }
    if (parts.length) await handle.write(Buffer.concat(parts))
    return { result: undefined }
  })
}

export async function readIndex(file: string): Promise<{ id: number; index: MasterIndex }> {
  const index: MasterIndex = new Map()
  let id = -1
  let expected = -1
  let pending: Buffer = Buffer.alloc(0)
  let key: string | null = null
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    let buf = pending.length ? Buffer.concat([pending, chunk]) : chunk
    let start = 0
    if (id < 0) {
      const nl = buf.indexOf(10)
      if (nl < 0) {
        pending = Buffer.from(buf)
        continue
      }
      const [magic, idText, countText] = buf.subarray(0, nl).toString().split(' ')
      if (magic !== HEADER) throw new SnapshotError(`${file} is not a snapshot index`)
      id = Number(idText)
      expected = Number(countText)
      start = nl + 1
    }
    for (;;) {
      const nul = buf.indexOf(0, start)
      if (nul < 0) break
      const text = buf.toString('utf8', start, nul)
      if (key === null) key = text
      else {
        index.set(key, text)
        key = null
      }
      start = nul + 1
    }
    pending = Buffer.from(buf.subarray(start))
    buf = pending
  }
  if (id < 0 || index.size !== expected || key !== null || pending.length) {
    throw new SnapshotError(`${file} is truncated (${index.size} of ${expected} entries)`)
  }
  return { id, index }
}
