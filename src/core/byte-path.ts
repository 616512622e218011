/**
 * Names are bytes. Linux allows any byte in a name but NUL and '/', and many names are not valid
 * UTF-8; decoding them as UTF-8 would map different names to one string (U+FFFD). So every path
 * and link target travels through the code as a *byte string*: a JS string whose char codes are
 * the name's bytes (0-255), as Buffer's 'latin1' encoding makes and reads them. Comparison of byte
 * strings is byte order, and V8 stores them one byte per char.
 *
 * Only the edges convert: the file system (Buffers), the manifest's JSON (UTF-8 text, or base64
 * for a name that is not UTF-8) and what a person reads (escaped text).
 */

/** The byte string of a JS (UTF-16) string's UTF-8 encoding: what a user-typed path is on disk. */
export function byteStringOf(text: string): string {
  return isAscii(text) ? text : Buffer.from(text, 'utf8').toString('latin1')
}

/**
 * A byte string as the fs module takes it, bytes exactly, never re-encoded: an ASCII one as it is
 * (its UTF-8 is its bytes), anything else as a Buffer. A Buffer for every path cost a delta pull
 * at 1M files ~0.3 s of CPU (~1%) making them (BENCHMARKS.md, "The exact copy").
 */
export type FsPath = string | Buffer

export function fsPath(bytes: string): FsPath {
  return isAscii(bytes) ? bytes : Buffer.from(bytes, 'latin1')
}

/** A name read from the file system (readdir/readlink with encoding 'buffer') as a byte string. */
export function bytesOf(buf: Buffer): string {
  return buf.toString('latin1')
}

const ASCII = /^[\x00-\x7f]*$/

/** A regular expression, not a loop of charCodeAt: 4-7x faster on the joined paths of an apply. */
export function isAscii(s: string): boolean {
  return ASCII.test(s)
}

/** The text a byte string's bytes spell in UTF-8, or null when they are not valid UTF-8. */
export function utf8TextOf(bytes: string): string | null {
  if (isAscii(bytes)) return bytes
  const buf = Buffer.from(bytes, 'latin1')
  const text = buf.toString('utf8')
  // Decoding replaces invalid sequences with U+FFFD; re-encoding then differs from the bytes.
  return Buffer.from(text, 'utf8').equals(buf) ? text : null
}

/**
 * A byte string as a person should read it: UTF-8 text as itself, and every byte that is not
 * printable text as an escape, so two different names never look alike: `\\` for a backslash,
 * `\n`, `\t`, `\r`, and `\xHH` for control bytes and bytes that are not valid UTF-8.
 */
export function displayPath(bytes: string): string {
  let plain = true
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes.charCodeAt(i)
    if (c < 0x20 || c === 0x5c || c >= 0x7f) {
      plain = false
      break
    }
  }
  if (plain) return bytes
  const buf = Buffer.from(bytes, 'latin1')
  let out = ''
  let i = 0
  while (i < buf.length) {
    const b = buf[i]!
    if (b === 0x5c) out += '\\\\'
    else if (b === 0x0a) out += '\\n'
    else if (b === 0x09) out += '\\t'
    else if (b === 0x0d) out += '\\r'
    else if (b < 0x20 || b === 0x7f) out += `\\x${hex2(b)}`
    else if (b < 0x80) out += String.fromCharCode(b)
    else {
      const n = utf8SequenceLength(buf, i)
      if (n === 0) out += `\\x${hex2(b)}`
      else {
        const ch = buf.toString('utf8', i, i + n)
        const cp = ch.codePointAt(0)!
        // C1 controls and the line/paragraph separators would break a line of output.
        out += cp < 0xa0 || cp === 0x2028 || cp === 0x2029 ? [...buf.subarray(i, i + n)].map((x) => `\\x${hex2(x)}`).join('') : ch
        i += n
        continue
      }
    }
    i++
  }
  return out
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, '0')
}

/** The length of the valid UTF-8 sequence starting at buf[i] (a lead byte >= 0x80), or 0. */
function utf8SequenceLength(buf: Buffer, i: number): number {
  const b = buf[i]!
  const n = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0
  if (n === 0 || i + n > buf.length) return 0
  for (let k = 1; k < n; k++) if ((buf[i + k]! & 0xc0) !== 0x80) return 0
  const cp = buf.toString('utf8', i, i + n).codePointAt(0)!
  // Overlong forms, surrogates and values past U+10FFFF decode to U+FFFD (which is 3 bytes itself).
  if (cp === 0xfffd && !(n === 3 && b === 0xef && buf[i + 1] === 0xbf && buf[i + 2] === 0xbd)) return 0
  return n
}

/** A path in an error message: escaped as displayPath, in double quotes. */
export function quotePath(bytes: string): string {
  return `"${displayPath(bytes)}"`
}
