import type { BigIntStats } from 'node:fs'
import { mtimeFromFindText, type Mtime } from '../core/mtime.js'
import { CARRIED_MODE_BITS } from '../core/tree-entry.js'

/**
 * The stat signature (SIG), made and read in this one place. It is find's `%y %m %s %T@ %C@ %i`:
 * type letter, permission bits in octal, size, mtime and ctime as seconds with ten fractional
 * digits, inode (`f 644 213 1795257700.6313518810 1795257700.6313518810 2542497`). Equal texts, same
 * metadata: it is compared as bytes for the million entries that did not change (tree-scan.ts,
 * master-index.ts) and decoded here only for the few that did. Pure: no I/O.
 *
 * A racy SIG (`<type> <mode> <size> <mtime> racy`) keeps what an entry is but never equals a
 * scan's SIG again, so the master reads that path once more (master-index.ts).
 */

const SPACE = 0x20
const RACY = 'racy'

/** The SIG find prints for an entry with these lstat (or fstat) results, to the byte. */
export function statSignature(st: BigIntStats): string {
  return `${typeLetter(st)} ${(st.mode & 0o7777n).toString(8)} ${st.size} ${timeText(st.mtimeNs)} ${timeText(st.ctimeNs)} ${st.ino}`
}

function typeLetter(st: BigIntStats): string {
  return st.isFile() ? 'f' : st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFIFO() ? 'p' : st.isSocket() ? 's' : st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : 'U'
}

/**
 * find's `%T@`: the seconds of the timespec, '.', its nanoseconds in nine digits, and a '0'. Before
 * 1970 the seconds are the floor and the nanoseconds count up from it (-0.5 s is "-1.5000000000").
 */
function timeText(ns: bigint): string {
  let sec = ns / 1_000_000_000n
  let frac = ns % 1_000_000_000n
  if (frac < 0n) {
    sec -= 1n
    frac += 1_000_000_000n
  }
  return `${sec}.${frac.toString().padStart(9, '0')}0`
}

/** Where field `n` (0-based) of a SIG starts, and where it ends (the next space or the end). */
function field(sig: string, n: number): string {
  let start = 0
  for (let i = 0; i < n; i++) start = sig.indexOf(' ', start) + 1
  const end = sig.indexOf(' ', start)
  return sig.slice(start, end < 0 ? sig.length : end)
}

/** The whole permission field a SIG records, setuid, setgid and sticky bits included. */
export function permissionBitsOfSig(sig: string): number {
  return parseInt(field(sig, 1), 8)
}

/** The carried permission bits a SIG records (`f 644 ...`; setuid and setgid dropped). */
export function modeOfSig(sig: string): number {
  return permissionBitsOfSig(sig) & CARRIED_MODE_BITS
}

/** The size a SIG records (its third field). */
export function sizeOfSig(sig: string): number {
  return Number(field(sig, 2))
}

/** The mtime a SIG records (its fourth field, find's `%T@`), as carried (core/mtime.ts). */
export function mtimeOfSig(sig: string): Mtime {
  return mtimeFromFindText(field(sig, 3))
}

/** A signature that keeps the entry's type, mode, size and mtime but never matches a scan again. */
export function racySig(sig: string): string {
  const c = sig.indexOf(' ', sig.indexOf(' ', sig.indexOf(' ', sig.indexOf(' ') + 1) + 1) + 1)
  return `${c < 0 ? sig : sig.slice(0, c)} ${RACY}`
}

/**
 * Whether the SIG held in `buf[start, end)` has a setuid or setgid bit, read from the bytes so the
 * scan of a million unchanged entries decodes no string: a permission field of four octal digits
 * whose first has bit 4 or 2.
 */
export function sigBytesHaveSetId(buf: Buffer, start: number, end: number): boolean {
  let i = start + 2
  const first = buf[i]!
  let digits = 0
  while (buf[i] !== SPACE && i < end) {
    i++
    digits++
  }
  return digits >= 4 && ((first - 0x30) & 6) !== 0
}
