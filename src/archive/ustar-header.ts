import { utf8TextOf } from '../core/byte-path.js'
/**
 * Pure POSIX ustar header code for the hot path: encode into, and decode from, a caller's buffer,
 * allocating nothing but the decoded strings and result. node-tar's generic Header costs 5-20 µs
 * an entry (scripts/tar-codec-bench.ts measures both; BENCHMARKS.md), which a million tiny files
 * cannot afford; this handles regular files, directories and symlinks. Names are byte strings (src/core/byte-path.ts) and go into the fields as their bytes,
 * as GNU tar stores them; a name too long for its field travels in a pax header (encodePaxHeader),
 * whose values are bytes too (node-tar's Pax encodes text as UTF-8, which would re-encode them).
 *
 * Layout (offset/width): name 0/100, mode 100/8, uid 108/8, gid 116/8, size 124/12, mtime 136/12,
 * chksum 148/8, typeflag 156/1, linkname 157/100, magic 257/6, version 263/2, uname 265/32,
 * gname 297/32, devmajor 329/8, devminor 337/8, prefix 345/155, then 12 bytes of padding.
 */
export const BLOCK = 512

const NAME_LEN = 100
const PREFIX_LEN = 155
const LINK_LEN = 100
/** The largest value 11 octal digits hold: 8 GiB - 1 bytes, and mtimes up to the year 2242. */
const MAX_OCTAL_12 = 0o77777777777
const MAX_OCTAL_8 = 0o7777777
const SLASH = 0x2f
const SPACE = 0x20
const ZERO = 0x30

/**
 * What every header we write shares: uid, gid, devmajor, devminor "0000000\0", magic "ustar\0",
 * version "00", uname and gname empty. Copying it costs what zero-filling the block would.
 */
const TEMPLATE = ((): Buffer => {
  const t = Buffer.alloc(BLOCK)
  for (const at of [108, 116, 329, 337]) t.write('0000000', at, 'latin1')
  t.write('ustar\u000000', 257, 'latin1')
  return t
})()
/** The template's byte sum, with the checksum field counted as spaces as the format says. */
const TEMPLATE_SUM = TEMPLATE.reduce((a, b) => a + b, 8 * SPACE)
/** An aligned block to sum a header four bytes at a time, whatever the caller's alignment. */
const SCRATCH = Buffer.alloc(BLOCK)
const SCRATCH32 = new Uint32Array(SCRATCH.buffer, SCRATCH.byteOffset, BLOCK / 4)

export type UstarType = '0' | '5' | '2' | 'x'

export interface UstarEntry {
  readonly path: string
  readonly mode: number
  readonly size: number
  readonly mtimeSec: number
  readonly type: UstarType
  readonly linkpath?: string | undefined
}

export interface DecodedUstarHeader {
  /** prefix + '/' + name when the prefix is set. */
  readonly path: string
  /** NaN when the field is not an octal number. */
  readonly mode: number
  /** NaN when the field is not an octal number (base-256 sizes, above 8 GiB, included). */
  readonly size: number
  /** The typeflag byte as a one-character string ('\0' for pre-POSIX regular files). */
  readonly type: string
  readonly linkpath: string
  readonly checksumValid: boolean
  /**
   * 'ustar' for POSIX "ustar\0" + "00"; 'gnu' for GNU tar's own "ustar  \0", whose bytes 345..500
   * are not a prefix (so the path is the name alone); null for anything else.
   */
  readonly magic: 'ustar' | 'gnu' | null
}

/**
 * Writes a complete 512-byte ustar header at buf[off..off+512). Returns false when the entry needs
 * a pax header: a path or link target that does not fit the 100-byte name (after splitting at a
 * '/' into a 155-byte prefix) or the 100-byte linkname; the block's bytes are then unspecified.
 * Owner 0/0 with no names, always: archives never tell a replica who owns a file. Throws a
 * RangeError for values no ustar field holds (sizes of 8 GiB and more, a NUL in a name, a char
 * that is not a byte).
 */
export function encodeUstarHeader(buf: Buffer, off: number, e: UstarEntry): boolean {
  const { path, mode, size, mtimeSec, type } = e
  const linkpath = e.linkpath ?? ''
  if (!Number.isInteger(size) || size < 0 || size > MAX_OCTAL_12) {
    throw new RangeError(`${JSON.stringify(path)}: a size of ${size} bytes does not fit a ustar header (8 GiB at most)`)
  }
  if (!Number.isInteger(mode) || mode < 0 || mode > MAX_OCTAL_8) throw new RangeError(`${JSON.stringify(path)}: mode ${mode} does not fit a ustar header`)
  if (!Number.isInteger(mtimeSec) || mtimeSec < 0 || mtimeSec > MAX_OCTAL_12) throw new RangeError(`mtime ${mtimeSec} does not fit a ustar header`)
  if (off < 0 || off + BLOCK > buf.length) throw new RangeError('need 512 bytes for a ustar header')
  if (linkpath.length > LINK_LEN) return false
  // split: the index of the '/' that ends the prefix, or -1 for a path that fits the name alone.
  // Byte strings: a char is a byte.
  const split = path.length <= NAME_LEN ? -1 : splitPoint(path)
  if (split === -2) return false

  buf.set(TEMPLATE, off)
  let sum = TEMPLATE_SUM
  let s: number
  if (split < 0) {
    if ((s = putBytes(buf, off, path, 0, path.length)) < 0) return false
    sum += s
  } else {
    if ((s = putBytes(buf, off, path, split + 1, path.length)) < 0) return false
    sum += s
    if ((s = putBytes(buf, off + 345, path, 0, split)) < 0) return false
    sum += s
  }
  if ((s = putBytes(buf, off + 157, linkpath, 0, linkpath.length)) < 0) return false
  sum += s
  sum += putOctal(buf, off + 100, 8, mode)
  sum += putOctal(buf, off + 124, 12, size)
  sum += putOctal(buf, off + 136, 12, mtimeSec)
  const t = type.charCodeAt(0)
  buf[off + 156] = t
  sum += t
  // Six octal digits, NUL, space: the traditional form every reader accepts.
  putOctal(buf, off + 148, 7, sum)
  buf[off + 155] = SPACE
  return true
}

/**
 * Reads the fields this project uses from the 512-byte header at buf[off..off+512). Never throws
 * on content: the caller decides what a bad checksum, magic or number means.
 */
export function decodeUstarHeader(buf: Buffer, off: number): DecodedUstarHeader {
  if (off < 0 || off + BLOCK > buf.length) throw new RangeError('need 512 bytes for a ustar header')
  const magic = magicOf(buf, off)
  let path = getString(buf, off, NAME_LEN)
  if (magic === 'ustar' && buf[off + 345] !== 0) path = getString(buf, off + 345, PREFIX_LEN) + '/' + path
  return {
    path,
    mode: getOctal(buf, off + 100, 8),
    size: getOctal(buf, off + 124, 12),
    type: String.fromCharCode(buf[off + 156]!),
    linkpath: getString(buf, off + 157, LINK_LEN),
    checksumValid: checksumValid(buf, off),
    magic,
  }
}

/** True when the recorded checksum matches the block's byte sum, unsigned or (old Sun, old GNU) signed. */
function checksumValid(buf: Buffer, off: number): boolean {
  const recorded = getOctal(buf, off + 148, 8)
  if (Number.isNaN(recorded)) return false
  // Sum four bytes at a time in two 16-bit lanes of each word: 128 words of at most 2 * 255 per
  // lane stay below 65536. Several times faster than a byte loop, and most of a header's cost.
  buf.copy(SCRATCH, 0, off, off + BLOCK)
  let lanes = 0
  for (let i = 0; i < BLOCK / 4; i++) {
    const w = SCRATCH32[i]!
    lanes += (w & 0x00ff00ff) + ((w >>> 8) & 0x00ff00ff)
  }
  let sum = (lanes & 0xffff) + (lanes >>> 16) + 8 * SPACE
  for (let i = 148; i < 156; i++) sum -= SCRATCH[i]!
  if (recorded === sum) return true
  let high = 0 // bytes >= 0x80, which a signed sum counts 256 lower
  for (let i = 0; i < BLOCK; i++) if (SCRATCH[i]! > 0x7f && (i < 148 || i >= 156)) high++
  return recorded === sum - 256 * high
}

function magicOf(buf: Buffer, off: number): 'ustar' | 'gnu' | null {
  const o = off + 257
  if (buf[o] !== 0x75 || buf[o + 1] !== 0x73 || buf[o + 2] !== 0x74 || buf[o + 3] !== 0x61 || buf[o + 4] !== 0x72) return null
  if (buf[o + 5] === 0 && buf[o + 6] === ZERO && buf[o + 7] === ZERO) return 'ustar'
  if (buf[o + 5] === SPACE && buf[o + 6] === SPACE && buf[o + 7] === 0) return 'gnu'
  return null
}

/** The split point for a path longer than the name field: -2 when none works. */
function splitPoint(path: string): number {
  // A '/' at index i leaves a prefix of i bytes and a name of length - i - 1 bytes; both non-empty,
  // so neither a leading '/' nor the trailing one of a directory qualifies. The rightmost fit
  // keeps the name short, as GNU tar does.
  const lo = Math.max(1, path.length - NAME_LEN - 1)
  for (let i = Math.min(PREFIX_LEN, path.length - 2); i >= lo; i--) {
    if (path.charCodeAt(i) === SLASH) return i
  }
  return -2
}

/** Writes the byte string s[from..to) at buf[at..] and returns the sum of its bytes. */
function putBytes(buf: Buffer, at: number, s: string, from: number, to: number): number {
  let sum = 0
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    if (c > 0xff) throw new RangeError(`${JSON.stringify(s)}: not a byte string`)
    if (c === 0) throw new RangeError(`${JSON.stringify(s)}: a NUL byte cannot be stored in a tar header`)
    buf[at + i - from] = c
    sum += c
  }
  return sum
}

/** Writes n as width-1 zero-padded octal digits and a NUL; returns the sum of the bytes written. */
function putOctal(buf: Buffer, at: number, width: number, n: number): number {
  let sum = 0
  for (let i = at + width - 2; i >= at; i--) {
    const d = n % 8
    buf[i] = ZERO + d
    sum += ZERO + d
    n = (n - d) / 8
  }
  buf[at + width - 1] = 0
  return sum
}

/** The bytes up to the first NUL (or the field's end), as a byte string: names are bytes. */
function getString(buf: Buffer, at: number, width: number): string {
  let end = at
  const limit = at + width
  while (end < limit && buf[end] !== 0) end++
  return end === at ? '' : buf.toString('latin1', at, end)
}

/**
 * An octal field: optional leading spaces, at least one digit, then only NULs and spaces. NaN for
 * anything else, including GNU base-256 numbers (high bit set), which nothing here needs.
 */
function getOctal(buf: Buffer, at: number, width: number): number {
  const end = at + width
  let i = at
  while (i < end && buf[i] === SPACE) i++
  let n = 0
  const first = i
  for (; i < end; i++) {
    const b = buf[i]!
    if (b < ZERO || b > ZERO + 7) break
    n = n * 8 + (b - ZERO)
  }
  if (i === first) return NaN
  for (; i < end; i++) if (buf[i] !== 0 && buf[i] !== SPACE) return NaN
  return n
}

/**
 * The records of a pax extended header ('x') body: "<len> <key>=<value>\n", where len counts the
 * whole record. Strict: any malformed record, or bytes left over, throws. node-tar's Pax.parse
 * splits the body on '\n' and so silently drops a record whose value holds a newline (a legal
 * path here), which would leave the entry with the truncated ustar name instead.
 */
export function decodePaxRecords(body: Buffer): Map<string, string> {
  const out = new Map<string, string>()
  let pos = 0
  while (pos < body.length) {
    let i = pos
    let len = 0
    while (i < body.length && body[i]! >= ZERO && body[i]! <= ZERO + 9 && i - pos < 10) len = len * 10 + (body[i++]! - ZERO)
    if (i === pos || body[i] !== SPACE || len <= i - pos + 1 || pos + len > body.length || body[pos + len - 1] !== 0x0a) {
      throw new RangeError(`a malformed pax record at byte ${pos}`)
    }
    const eq = body.indexOf(0x3d, i + 1) // '='
    if (eq < 0 || eq >= pos + len - 1 || eq === i + 1) throw new RangeError(`a malformed pax record at byte ${pos}`)
    // Values as byte strings: a path's bytes whether UTF-8 or not (hdrcharset=BINARY).
    out.set(body.toString('latin1', i + 1, eq), body.toString('latin1', eq + 1, pos + len - 1))
    pos += len
  }
  return out
}

/**
 * A pax extended header ('x') for a path and link target too long for their ustar fields: the
 * header block and its body, padded. Values are written as their bytes; `hdrcharset=BINARY` says
 * so when they are not UTF-8 (POSIX pax), so that GNU tar restores them byte for byte.
 */
export function encodePaxHeader(path: string, linkpath: string | undefined, mtimeSec: number): Buffer {
  const values: [string, string][] = [['path', path]]
  if (linkpath !== undefined) values.push(['linkpath', linkpath])
  const binary = values.some(([, v]) => utf8TextOf(v) === null)
  const records = (binary ? [['hdrcharset', 'BINARY'] as [string, string]] : []).concat(values)
  const body = Buffer.from(records.map(([k, v]) => paxRecord(k, v)).join(''), 'latin1')
  const padded = Math.ceil(body.length / BLOCK) * BLOCK
  const out = Buffer.alloc(BLOCK + padded)
  const base = path.slice(path.lastIndexOf('/') + 1)
  const name = `PaxHeaders/${base}`.slice(0, NAME_LEN)
  if (!encodeUstarHeader(out, 0, { path: name, mode: 0o644, size: body.length, mtimeSec, type: 'x' })) throw new RangeError('internal: pax header name')
  body.copy(out, BLOCK)
  return out
}

/** "<len> key=value\n", where len counts the whole record, its own digits included. */
function paxRecord(key: string, value: string): string {
  const rest = ` ${key}=${value}\n`.length
  let len = rest + 1
  while (String(len).length + rest !== len) len = String(len).length + rest
  return `${len}${` ${key}=${value}\n`}`
}
