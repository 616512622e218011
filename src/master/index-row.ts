import { SnapshotError } from '../core/errors.js'
import type { TreeEntry } from '../core/tree-entry.js'
import { modeOfSig, mtimeOfSig, sizeOfSig } from '../fs/stat-signature.js'
import type { RawScanRecord } from '../fs/tree-scan.js'

/**
 * The row codec of the master's index, pure (index-rows.ts loads an index, master-index.ts makes
 * the next one). The index is the master's memory between builds: for every path, the scan record
 * it had (its stat signature and link target) and its content hash. A path whose record is byte for byte the same is not read
 * again. A build meets every entry of the tree, so everything here is per-entry cost that does not
 * follow the changes; the format is made so that an unchanged entry costs one comparison of bytes
 * and one copy of bytes, with no string, object or hash-table insertion (docs/FORMAT.md):
 *
 *   header line: `playlist-snapshot-index/3 <id> <rows> <files> <dirs> <links> <bytes>`
 *   each row:    u32le FNV-1a of PATH | u16le record length | SIG\0PATH\0TARGET\0 | sha256 (32 bytes, files)
 *
 * Rows are trusted to hold paths and link targets that passed tree-path.ts's checks (only those are
 * written): a change to the format or to those rules needs a new version, and an index of another
 * version is ignored (the build then reads the whole tree once).
 *
 * Entries that the build has to look at are decoded into a value string, `${sig}\t${payload}`, with
 * the sha256 in hex, the link target, or nothing for a directory. A racy SIG (stat-signature.ts)
 * keeps the entry but never matches a scan, so the path is read again. Paths and targets are byte
 * strings (byte-path.ts): rows hold their bytes as they are.
 */
export const INDEX_VERSION = 3
export const MAGIC = 'playlist-snapshot-index/'
export const HEADER = `${MAGIC}${INDEX_VERSION}`
export const SHA_BYTES = 32
export const ROW_HEAD = 6 // u32 path hash, u16 record length
export const TYPE_F = 0x66
export const TYPE_D = 0x64

export interface TreeCounts {
  files: number
  dirs: number
  links: number
  bytes: number
}

export function indexValue(sig: string, payload: string): string {
  return `${sig}\t${payload}`
}
export function sigOf(value: string): string {
  return value.slice(0, value.indexOf('\t'))
}
export function payloadOf(value: string): string {
  return value.slice(value.indexOf('\t') + 1)
}

/** The tree entry an index value stands for (type, mode and size lead the stat signature). */
export function entryFromIndex(path: string, value: string): TreeEntry {
  const type = value[0]
  if (type === 'f') return { type: 'f', path, mode: modeOfSig(value), size: sizeOfSig(value), mtime: mtimeOfSig(value), sha256: payloadOf(value) }
  if (type === 'd') return { type: 'd', path, mode: modeOfSig(value), mtime: mtimeOfSig(value) }
  if (type === 'l') return { type: 'l', path, target: payloadOf(value), mtime: mtimeOfSig(value) }
  throw new SnapshotError(`index entry for ${path} has unknown type '${type}'`)
}

export function addCounts(counts: TreeCounts, type: number, size: number, sign: 1 | -1): void {
  if (type === TYPE_F) {
    counts.files += sign
    counts.bytes += sign * size
  } else if (type === 0x64) counts.dirs += sign
  else counts.links += sign
}

/** FNV-1a (32 bits) of bytes: the path hash the rows carry, so loading an index hashes nothing. */
export function fnv1a(buf: Buffer, start: number, end: number): number {
  let h = 0x811c9dc5
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, 0x01000193)
  return h >>> 0
}

/** The path hash the row that starts at `at` carries (see fnv1a). */
export function rowPathHashAt(buf: Buffer, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0
}

/** The length of the scan record (SIG\0PATH\0TARGET\0) the row that starts at `at` holds. */
export function rowRecordLength(buf: Buffer, at: number): number {
  return buf[at + 4]! | (buf[at + 5]! << 8)
}

/** The whole length of the row that starts at `at`: head, record, and a file's sha256. */
export function rowLength(buf: Buffer, at: number): number {
  return ROW_HEAD + rowRecordLength(buf, at) + (buf[at + ROW_HEAD] === TYPE_F ? SHA_BYTES : 0)
}

/** A file row's size, read from the SIG's bytes (`f <mode> <size> ...`); 0 for any other row. */
export function rowFileSizeAt(buf: Buffer, at: number): number {
  const p = at + ROW_HEAD
  let size = 0
  if (buf[p] === TYPE_F) {
    let q = buf.indexOf(0x20, buf.indexOf(0x20, p) + 1) + 1 // after `f <mode> `
    for (let c = buf[q]!; c >= 0x30 && c <= 0x39; c = buf[++q]!) size = size * 10 + (c - 0x30)
  }
  return size
}

/** The PATH of the row that starts at `at`. */
export function rowPathAt(buf: Buffer, at: number): string {
  const pathStart = buf.indexOf(0, at + ROW_HEAD) + 1
  return buf.toString('latin1', pathStart, buf.indexOf(0, pathStart))
}

/** The SIG of the row that starts at `at`. */
export function rowSigAt(buf: Buffer, at: number): string {
  return buf.toString('latin1', at + ROW_HEAD, buf.indexOf(0, at + ROW_HEAD))
}

/** Where the sha256 of the file row that starts at `at` is. */
export function rowHashAt(buf: Buffer, at: number): number {
  return at + ROW_HEAD + (buf[at + 4]! | (buf[at + 5]! << 8))
}

/** The value (module comment) of the row that starts at `at`; `sig` in place of the row's own. */
export function rowValueAt(buf: Buffer, at: number, sig = rowSigAt(buf, at)): string {
  const end = rowHashAt(buf, at)
  if (buf[at + ROW_HEAD] === TYPE_F) return indexValue(sig, buf.toString('hex', end, end + SHA_BYTES))
  const targetStart = buf.indexOf(0, buf.indexOf(0, at + ROW_HEAD) + 1) + 1
  return indexValue(sig, buf.toString('latin1', targetStart, end - 1))
}

/** The most bytes a row of these fields can take (byte strings: a byte per char). */
export function rowBytes(path: string, sig: string, payload: string): number {
  const target = sig.charCodeAt(0) === 0x6c ? payload : ''
  return ROW_HEAD + sig.length + path.length + target.length + 3 + SHA_BYTES
}

/** Encodes one row (see the module comment) into `c` at `at`; returns where it ends. */
export function writeRow(c: Buffer, at: number, path: string, sig: string, payload: string): number {
  const isFile = sig.charCodeAt(0) === TYPE_F
  const target = sig.charCodeAt(0) === 0x6c ? payload : ''
  let p = at + ROW_HEAD
  p += c.write(sig, p, 'latin1')
  c[p++] = 0
  const pathStart = p
  p += c.write(path, p, 'latin1')
  const pathEnd = p
  c[p++] = 0
  p += c.write(target, p, 'latin1')
  c[p++] = 0
  c.writeUInt32LE(fnv1a(c, pathStart, pathEnd), at)
  c.writeUInt16LE(p - at - ROW_HEAD, at + 4)
  if (isFile) p += c.write(payload, p, 'hex')
  return p
}

/**
 * Encodes a scan record as it is into a row at `at` of `c` (a file's sha256 left zero, to be
 * filled at rowHashAt); returns where the row ends. `c` must have rowLength's room.
 */
export function writeRecordRow(c: Buffer, at: number, raw: RawScanRecord): number {
  const recordLength = raw.end - raw.start
  const isFile = raw.buf[raw.start] === TYPE_F
  c.writeUInt32LE(fnv1a(raw.buf, raw.pathStart, raw.targetStart - 1), at)
  c.writeUInt16LE(recordLength, at + 4)
  raw.buf.copy(c, at + ROW_HEAD, raw.start, raw.end)
  const end = at + ROW_HEAD + recordLength + (isFile ? SHA_BYTES : 0)
  if (isFile) c.fill(0, at + ROW_HEAD + recordLength, end)
  return end
}

/** A directory's or symlink's entry, straight from the row that starts at `at`. */
export function rowEntryAt(buf: Buffer, at: number): Exclude<TreeEntry, { type: 'f' }> {
  const sigEnd = buf.indexOf(0, at + ROW_HEAD)
  const pathEnd = buf.indexOf(0, sigEnd + 1)
  const path = buf.toString('latin1', sigEnd + 1, pathEnd)
  const sig = buf.toString('latin1', at + ROW_HEAD, sigEnd)
  if (buf[at + ROW_HEAD] === 0x64) return { type: 'd', path, mode: modeOfSig(sig), mtime: mtimeOfSig(sig) }
  return { type: 'l', path, target: buf.toString('latin1', pathEnd + 1, buf.indexOf(0, pathEnd + 1)), mtime: mtimeOfSig(sig) }
}

export function encodeIndexHeader(id: number, c: TreeCounts): string {
  return `${HEADER} ${id} ${c.files + c.dirs + c.links} ${c.files} ${c.dirs} ${c.links} ${c.bytes}\n`
}
