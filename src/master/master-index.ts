import { readFile, type FileHandle } from 'node:fs/promises'
import { SnapshotError } from '../core/errors.js'
import type { TreeEntry } from '../core/tree-entry.js'
import { writeStreamAtomic } from '../fs/durable.js'
import { modeOfSig, mtimeOfSig, sizeOfSig, type RawScanRecord } from '../fs/tree-scan.js'

/**
 * The master's memory between builds: for every path, the scan record it had (its stat signature
 * and link target) and its content hash. A path whose record is byte for byte the same is not read
 * again. A build meets every entry of the tree, so everything here is per-entry cost that does not
 * follow the changes; the format is made so that an unchanged entry costs one comparison of bytes
 * and one copy of bytes, with no string, object or hash-table insertion (docs/FORMAT.md):
 *
 *   header line: `playlist-snapshot-index/3 <id> <rows> <files> <dirs> <links> <bytes>`
 *   each row:    u32le FNV-1a of PATH | u16le record length | SIG\0PATH\0TARGET\0 | sha256 (32 bytes, files)
 *
 * Rows are in the order of the scan that wrote them, which is the order the next scan meets them
 * in (readdir order, stable while a directory is unchanged): the scan walks the previous rows with
 * a cursor, and only an entry that is not the next row is looked up, by the hash of its path.
 *
 * Rows are trusted to hold paths and link targets that passed tree-path.ts's checks (only those are
 * written): a change to the format or to those rules needs a new version, and an index of another
 * version is ignored (the build then reads the whole tree once).
 *
 * Entries that the build has to look at are decoded into a value string, `${sig}\t${payload}`, with
 * the sha256 in hex, the link target, or nothing for a directory. A SIG of `<type> <mode> <size>
 * <mtime> racy` keeps the entry but never matches a scan, so the path is read again. Paths and
 * targets are byte strings (byte-path.ts): rows hold their bytes as they are.
 */
export const INDEX_VERSION = 3
const MAGIC = 'playlist-snapshot-index/'
const HEADER = `${MAGIC}${INDEX_VERSION}`
const RACY_SIG = 'racy'
export const SHA_BYTES = 32
export const ROW_HEAD = 6 // u32 path hash, u16 record length
export const TYPE_F = 0x66

export interface TreeCounts {
  files: number
  dirs: number
  links: number
  bytes: number
}

/** An index file of another version: not an error, the build reads the whole tree instead. */
export class IndexVersionError extends SnapshotError {
  override readonly code = 'ERR_INDEX_VERSION'
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

/** A signature that keeps the entry's type, mode, size and mtime but never matches a scan again. */
export function racySig(sig: string): string {
  const c = sig.indexOf(' ', sig.indexOf(' ', sig.indexOf(' ', sig.indexOf(' ') + 1) + 1) + 1)
  return `${c < 0 ? sig : sig.slice(0, c)} ${RACY_SIG}`
}

function addCounts(counts: TreeCounts, type: number, size: number, sign: 1 | -1): void {
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

function u32(buf: Buffer, p: number): number {
  return (buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24)) >>> 0
}

/** The rows of an index file, as loaded: read-only. Row `i` is `buf[starts[i], starts[i + 1])`. */
export class IndexRows {
  private table: Int32Array | null = null // open addressing, path hash -> row; built on first use

  private constructor(
    readonly id: number,
    private readonly buf: Buffer,
    private readonly starts: Float64Array,
    readonly counts: Readonly<TreeCounts>,
  ) {}

  static empty(): IndexRows {
    return new IndexRows(0, Buffer.alloc(0), new Float64Array(1), { files: 0, dirs: 0, links: 0, bytes: 0 })
  }

  static parse(file: string, buf: Buffer): IndexRows {
    const nl = buf.indexOf(10)
    const head = buf.toString('latin1', 0, nl < 0 ? Math.min(buf.length, 200) : nl).split(' ')
    if (!head[0]?.startsWith(MAGIC)) throw new SnapshotError(`${file} is not a snapshot index`)
    if (head[0] !== HEADER) throw new IndexVersionError(`${file} has index format ${head[0].slice(MAGIC.length)}, this version reads ${INDEX_VERSION}`)
    const numbers = head.slice(1).map(Number)
    const [id, rows, files, dirs, links, bytes] = numbers as [number, number, number, number, number, number]
    if (nl < 0 || numbers.length !== 6 || !numbers.every((n) => Number.isSafeInteger(n) && n >= 0)) throw new SnapshotError(`${file} has a damaged header`)
    const starts = new Float64Array(rows + 1)
    let p = nl + 1
    let i = 0
    for (; i < rows && p + ROW_HEAD < buf.length; i++) {
      starts[i] = p
      const recLen = buf[p + 4]! | (buf[p + 5]! << 8)
      p += ROW_HEAD + recLen + (buf[p + ROW_HEAD] === TYPE_F ? SHA_BYTES : 0)
    }
    if (i !== rows || p !== buf.length) throw new SnapshotError(`${file} is truncated or damaged (${i} of ${rows} rows)`)
    starts[i] = p
    return new IndexRows(id, buf, starts, { files, dirs, links, bytes })
  }

  get length(): number {
    return this.starts.length - 1
  }

  /** Whether row `i` holds exactly this scan record: same path, stat signature and link target. */
  isRecord(i: number, raw: RawScanRecord): boolean {
    const p = this.starts[i]! + ROW_HEAD
    const len = raw.end - raw.start
    return (this.buf[p - 2]! | (this.buf[p - 1]! << 8)) === len && raw.buf.compare(this.buf, p, p + len, raw.start, raw.end) === 0
  }

  /** Whether row `i` is this scan record's path. */
  hasPath(i: number, raw: RawScanRecord): boolean {
    const pathStart = this.buf.indexOf(0, this.starts[i]! + ROW_HEAD) + 1
    const pathEnd = pathStart + (raw.targetStart - 1 - raw.pathStart)
    return this.buf[pathEnd] === 0 && raw.buf.compare(this.buf, pathStart, pathEnd, raw.pathStart, raw.targetStart - 1) === 0
  }

  /** The row of this scan record's path, or -1. */
  find(raw: RawScanRecord): number {
    const table = (this.table ??= this.buildTable())
    const mask = table.length - 1
    const h = fnv1a(raw.buf, raw.pathStart, raw.targetStart - 1)
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const i = table[slot]!
      if (i < 0) return -1
      if (u32(this.buf, this.starts[i]!) === h && this.hasPath(i, raw)) return i
    }
  }

  private buildTable(): Int32Array {
    let size = 16
    while (size < 2 * this.length) size *= 2
    const table = new Int32Array(size).fill(-1)
    const mask = size - 1
    for (let i = 0; i < this.length; i++) {
      let slot = u32(this.buf, this.starts[i]!) & mask
      while (table[slot] !== -1) slot = (slot + 1) & mask
      table[slot] = i
    }
    return table
  }

  path(i: number): string {
    return rowPathAt(this.buf, this.starts[i]!)
  }

  value(i: number): string {
    return rowValueAt(this.buf, this.starts[i]!)
  }

  /** Adds (or subtracts) row `i`'s entry to a tree's counts, straight from its bytes. */
  count(i: number, counts: TreeCounts, sign: 1 | -1): void {
    const p = this.starts[i]! + ROW_HEAD
    let size = 0
    if (this.buf[p] === TYPE_F) {
      let q = this.buf.indexOf(0x20, this.buf.indexOf(0x20, p) + 1) + 1 // after `f <mode> `
      for (let c = this.buf[q]!; c >= 0x30 && c <= 0x39; c = this.buf[++q]!) size = size * 10 + (c - 0x30)
    }
    addCounts(counts, this.buf[p]!, size, sign)
  }

  /** Every row as path and value, in order. */
  *entries(): Generator<[string, string]> {
    for (let i = 0; i < this.length; i++) yield [this.path(i), this.value(i)]
  }

  /** The bytes of rows `from` to `to` (exclusive), for a copy into the next index. */
  bytes(from: number, to: number): Buffer {
    return this.buf.subarray(this.starts[from]!, this.starts[to]!)
  }
}

/** Entries by number, decoded on demand. */
export interface EntryList {
  readonly length: number
  path(n: number): string
  value(n: number): string
}

/**
 * A new or changed entry of the next index: its stat signature and payload (the sha256 in hex, the
 * link target, or ''), kept apart so that nothing is concatenated per entry. A file to read has
 * no signature until it is read; until then its previous row, if it had one, stands for it.
 */
export class IndexSlot {
  private dropped = false

  constructor(
    readonly path: string,
    public sig: string | undefined,
    public payload: string,
    /** The previous index's row for this path, or -1. */
    readonly previousRow = -1,
  ) {}

  /** What reading the file found. */
  fill(sig: string, payload: string): void {
    this.sig = sig
    this.payload = payload
  }

  /** The file is gone: no entry, not even the previous one. */
  drop(): void {
    this.sig = undefined
    this.dropped = true
  }

  /** The previous row standing for an unread file, or -1. */
  get standIn(): number {
    return this.sig === undefined && !this.dropped ? this.previousRow : -1
  }
}

/** Rows of the previous index carried over unchanged, `from` to `to` (exclusive). */
class RowRun {
  constructor(
    readonly from: number,
    public to: number,
  ) {}
}

const UNSEEN = 0
const CARRIED = 1
const TAKEN = 2

/**
 * The index of the tree being built, made by one scan from the previous index: for each scan
 * record in order, either a row of the previous index carried over as it is (`carryNextIfSame`,
 * `carry`), or a slot for an entry that is new or changed. Rows that no scan record took are the
 * deleted entries (`finish`).
 */
export class MasterIndex {
  private readonly parts: (RowRun | IndexSlot)[] = []
  private readonly slots: IndexSlot[] = []
  private readonly state: Uint8Array
  /** The previous rows not carried over, counted as they are taken (see counts). */
  private readonly dropped: TreeCounts = { files: 0, dirs: 0, links: 0, bytes: 0 }
  private cursor = 0
  private finished = false

  constructor(private readonly previous: IndexRows = IndexRows.empty()) {
    this.state = new Uint8Array(previous.length)
  }

  /**
   * The common case, and so the fast path: the scan record is, byte for byte, the previous row
   * after the last one taken. Carries that row over and returns true.
   */
  carryNextIfSame(raw: RawScanRecord): boolean {
    const i = this.cursor
    if (i >= this.state.length || !this.previous.isRecord(i, raw)) return false
    this.cursor = i + 1
    this.carry(i)
    return true
  }

  /**
   * The previous row of this record's path, marked as taken (or -1): the next row, or one found by
   * its path hash elsewhere. A row found ahead moves the cursor past it; the rows skipped are found
   * by their own records later, or are deleted.
   */
  take(raw: RawScanRecord): number {
    let i = this.cursor < this.state.length && this.previous.hasPath(this.cursor, raw) ? this.cursor : -1
    if (i < 0) i = this.previous.find(raw)
    if (i < 0 || this.state[i] !== UNSEEN) return -1 // a path met twice: impossible in one scan, but never carried twice
    this.state[i] = TAKEN
    this.previous.count(i, this.dropped, 1)
    if (i >= this.cursor) this.cursor = i + 1
    return i
  }

  /** Carries previous row `i` over unchanged, at this point of the scan. */
  carry(i: number): void {
    if (this.state[i] === TAKEN) this.previous.count(i, this.dropped, -1)
    this.state[i] = CARRIED
    const last = this.parts[this.parts.length - 1]
    if (last instanceof RowRun && last.to === i) last.to++
    else this.parts.push(new RowRun(i, i + 1))
  }

  isRecord(i: number, raw: RawScanRecord): boolean {
    return this.previous.isRecord(i, raw)
  }

  previousValue(i: number): string {
    return this.previous.value(i)
  }

  /** The entry a slot's path had in the previous index, if any. */
  previousEntry(slot: IndexSlot): TreeEntry | undefined {
    return slot.previousRow < 0 ? undefined : entryFromIndex(slot.path, this.previous.value(slot.previousRow))
  }

  /** A new or changed entry, at this point of the scan. */
  add<T extends IndexSlot>(slot: T): T {
    this.parts.push(slot)
    this.slots.push(slot)
    return slot
  }

  /** Ends the scan: the paths and values of the previous rows that no record took, i.e. deleted. */
  finish(): [string, string][] {
    this.finished = true
    const deleted: [string, string][] = []
    for (let i = 0; i < this.state.length; i++) {
      if (this.state[i] !== UNSEEN) continue
      deleted.push([this.previous.path(i), this.previous.value(i)])
      this.previous.count(i, this.dropped, 1)
    }
    return deleted
  }

  /** The tree's counts: the previous ones, less the rows not carried over, plus the slots. */
  counts(): TreeCounts {
    if (!this.finished) throw new SnapshotError('internal: index counts asked before the scan finished')
    const p = this.previous.counts
    const d = this.dropped
    const counts = { files: p.files - d.files, dirs: p.dirs - d.dirs, links: p.links - d.links, bytes: p.bytes - d.bytes }
    for (const slot of this.slots) {
      const { sig } = slot
      if (sig !== undefined) addCounts(counts, sig.charCodeAt(0), sig.charCodeAt(0) === TYPE_F ? sizeOfSig(sig) : 0, 1)
      else if (slot.standIn >= 0) this.previous.count(slot.standIn, counts, 1)
    }
    return counts
  }

  /**
   * Every entry, in scan order, by number: path and value are decoded only when asked, so a full
   * archive can sort a million entries holding little more than their paths.
   */
  entryList(): EntryList {
    const refs: number[] = [] // >= 0: a previous row; < 0: -(k + 1) for filled slot k
    const filled: IndexSlot[] = []
    for (const part of this.parts) {
      if (part instanceof RowRun) {
        for (let i = part.from; i < part.to; i++) refs.push(i)
      } else if (part.sig !== undefined) refs.push(-filled.push(part))
      else if (part.standIn >= 0) refs.push(part.standIn)
    }
    const previous = this.previous
    return {
      length: refs.length,
      path: (n) => (refs[n]! >= 0 ? previous.path(refs[n]!) : filled[-refs[n]! - 1]!.path),
      value: (n) => {
        const ref = refs[n]!
        if (ref >= 0) return previous.value(ref)
        const slot = filled[-ref - 1]!
        return indexValue(slot.sig!, slot.payload)
      },
    }
  }

  /** Writes the index durably: unchanged rows are copied as they are, slots encoded. */
  async write(file: string, id: number): Promise<void> {
    const c = this.counts()
    const out = new ChunkedOutput()
    out.text(encodeIndexHeader(id, c))
    await writeStreamAtomic(file, async (handle) => {
      for (const part of this.parts) {
        if (part instanceof RowRun) out.bytes(this.previous.bytes(part.from, part.to))
        else if (part.sig !== undefined) out.row(part.path, part.sig, part.payload)
        else if (part.standIn >= 0) out.bytes(this.previous.bytes(part.standIn, part.standIn + 1))
        for (const b of out.take()) await writeAll(handle, b)
      }
      for (const b of out.take(true)) await writeAll(handle, b)
      return { result: undefined }
    })
  }
}

export async function writeAll(handle: FileHandle, b: Buffer): Promise<void> {
  for (let done = 0; done < b.length; ) done += (await handle.write(b, done, b.length - done)).bytesWritten
}

const CHUNK = 4 << 20

/** Fills large buffers, so the file is written in a few big writes; large runs go out uncopied. */
class ChunkedOutput {
  private chunk = Buffer.allocUnsafe(CHUNK)
  private used = 0
  private ready: Buffer[] = []

  text(s: string): void {
    this.room(Buffer.byteLength(s))
    this.used += this.chunk.write(s, this.used, 'latin1')
  }

  bytes(b: Buffer): void {
    if (b.length >= CHUNK / 4) {
      this.cut()
      this.ready.push(b)
      return
    }
    this.room(b.length)
    this.used += b.copy(this.chunk, this.used)
  }

  /** One row (see the module comment). */
  row(path: string, sig: string, payload: string): void {
    this.room(rowBytes(path, sig, payload))
    this.used = writeRow(this.chunk, this.used, path, sig, payload)
  }

  /** The buffers ready to be written; with `all`, the unfinished one too. */
  take(all = false): Buffer[] {
    if (all) this.cut()
    const r = this.ready
    this.ready = []
    return r
  }

  private room(n: number): void {
    if (this.used + n > this.chunk.length) {
      this.cut()
      if (n > this.chunk.length) this.chunk = Buffer.allocUnsafe(n)
    }
  }

  private cut(): void {
    if (this.used === 0) return
    this.ready.push(this.chunk.subarray(0, this.used))
    this.chunk = Buffer.allocUnsafe(CHUNK)
    this.used = 0
  }
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

export function encodeIndexHeader(id: number, c: TreeCounts): string {
  return `${HEADER} ${id} ${c.files + c.dirs + c.links} ${c.files} ${c.dirs} ${c.links} ${c.bytes}\n`
}

/** Loads an index file. Throws IndexVersionError for an index of another version. */
export async function readIndex(file: string): Promise<IndexRows> {
  return IndexRows.parse(file, await readFile(file))
}
