import { UnsafeArchiveError } from './errors.js'
import { isMtime } from './mtime.js'
import { CARRIED_MODE_BITS, type ManifestEntry, type RootMeta } from './tree-entry.js'
import { linkTargetProblem, pathProblem } from './tree-path.js'
import { byteStringOf, quotePath, utf8TextOf } from './byte-path.js'

/**
 * A manifest is newline-delimited JSON (zstd-compressed in the store):
 *   1. a header line;
 *   2. the deleted paths, in descending order (children before their parents);
 *   3. the entries the archive carries, in ascending order, the archive's own order.
 * Order is byte order of the paths on both sides, so a replica can check the archive against the
 * manifest in lockstep with constant memory, and a repeated or unnamed entry shows as a break in
 * the order.
 * Entries carry no content hash: the archive's bytes are vouched for by the sha256 the signed
 * record names for the whole archive, and a full archive's content by the tree digest.
 *
 * Format 3: paths and link targets are bytes (`p`/`l` hold the UTF-8 text of a name that is valid
 * UTF-8, `pb`/`lb` the base64 of one that is not), every entry has its mtime (`u`), and the header
 * carries the root directory's mode and mtime.
 */
export const MANIFEST_FORMAT = 'playlist-snapshot-manifest/3'
const OLDER_FORMATS = new Set(['playlist-snapshot-manifest/1', 'playlist-snapshot-manifest/2'])

export interface ManifestHeader {
  readonly manifest: typeof MANIFEST_FORMAT
  readonly id: number
  readonly kind: 'full' | 'delta'
  readonly base: number | null // the snapshot a delta applies to
  readonly entries: number
  readonly deleted: number
  readonly root: RootMeta
}

export function encodeHeaderLine(h: ManifestHeader): string {
  return JSON.stringify({ ...h, root: { m: h.root.mode, u: h.root.mtime } }) + '\n'
}

/** `"p":"text"` for a name that is UTF-8, `"pb":"base64"` for one that is not. */
function nameField(key: 'p' | 'l', bytes: string): string {
  const text = utf8TextOf(bytes)
  return text !== null ? `"${key}":${JSON.stringify(text)}` : `"${key}b":"${Buffer.from(bytes, 'latin1').toString('base64')}"`
}

export function encodeDeletionLine(path: string): string {
  return `{"t":"-",${nameField('p', path)}}\n`
}
/** A TreeEntry's content hash is not written: the manifest carries what a ManifestEntry holds. */
export function encodeEntryLine(e: ManifestEntry): string {
  switch (e.type) {
    case 'f':
      return `{"t":"f",${nameField('p', e.path)},"m":${e.mode},"s":${e.size},"u":"${e.mtime}"}\n`
    case 'd':
      return `{"t":"d",${nameField('p', e.path)},"m":${e.mode},"u":"${e.mtime}"}\n`
    case 'l':
      return `{"t":"l",${nameField('p', e.path)},${nameField('l', e.target)},"u":"${e.mtime}"}\n`
  }
}

function refuse(lineNo: number, what: string): never {
  throw new UnsafeArchiveError(`manifest line ${lineNo}: ${what}`)
}

function validMode(mode: unknown): mode is number {
  return typeof mode === 'number' && Number.isInteger(mode) && mode >= 0 && (mode & ~CARRIED_MODE_BITS) === 0 // no setuid/setgid
}

export function parseHeaderLine(line: string): ManifestHeader {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(line) as Record<string, unknown>
  } catch {
    refuse(1, 'not JSON')
  }
  if (typeof o.manifest === 'string' && OLDER_FORMATS.has(o.manifest)) {
    refuse(1, `${o.manifest} was written by an older master, which this version does not apply (names as bytes, mtimes: docs/FORMAT.md); upgrade the master: its first build after the upgrade publishes a full snapshot that this replica takes`)
  }
  if (o.manifest !== MANIFEST_FORMAT) refuse(1, `unknown manifest format ${JSON.stringify(o.manifest)} (this version reads ${MANIFEST_FORMAT}; a newer master? upgrade this replica)`)
  if (o.kind !== 'full' && o.kind !== 'delta') refuse(1, 'kind')
  const counts = [o.id, o.entries, o.deleted]
  if (!counts.every((n) => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0)) refuse(1, 'counts')
  if (o.base !== null && !(typeof o.base === 'number' && Number.isSafeInteger(o.base))) refuse(1, 'base')
  const root = o.root as Record<string, unknown> | null
  if (typeof root !== 'object' || root === null || !validMode(root.m) || !isMtime(root.u)) refuse(1, 'root')
  return { manifest: MANIFEST_FORMAT, id: o.id as number, kind: o.kind, base: o.base as number | null, entries: o.entries as number, deleted: o.deleted as number, root: { mode: root.m, mtime: root.u } }
}

export type ManifestLine = { kind: 'deleted'; path: string } | { kind: 'entry'; entry: ManifestEntry }

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/** A name field as a byte string: `key` (UTF-8 text) or `key`b (base64 of the bytes), not both. */
function nameOf(o: Record<string, unknown>, key: 'p' | 'l', lineNo: number): string | undefined {
  const text = o[key]
  const b64 = key === 'p' ? o.pb : o.lb // not a key built per line: this runs for every entry of a pull
  if (text !== undefined && b64 !== undefined) refuse(lineNo, `both ${key} and ${key}b`)
  if (typeof text === 'string') return byteStringOf(text)
  if (typeof b64 === 'string' && b64.length % 4 === 0 && BASE64.test(b64)) return Buffer.from(b64, 'base64').toString('latin1')
  if (text !== undefined || b64 !== undefined) refuse(lineNo, `${key}: not a string`)
  return undefined
}

/** Parses and checks one body line: every path and link target must be safe to write. */
export function parseBodyLine(line: string, lineNo: number): ManifestLine {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(line) as Record<string, unknown>
  } catch {
    refuse(lineNo, 'not JSON')
  }
  const path = nameOf(o, 'p', lineNo)
  if (path === undefined) refuse(lineNo, 'no path')
  const problem = pathProblem(path)
  if (problem) refuse(lineNo, `${quotePath(path)}: ${problem}`)
  if (o.t === '-') return { kind: 'deleted', path }
  const mtime = o.u
  if (!isMtime(mtime)) refuse(lineNo, `${quotePath(path)}: mtime`)
  const mode = o.m
  switch (o.t) {
    case 'f': {
      if (!validMode(mode)) refuse(lineNo, `${quotePath(path)}: mode`)
      if (typeof o.s !== 'number' || !Number.isSafeInteger(o.s) || o.s < 0) refuse(lineNo, `${quotePath(path)}: size`)
      return { kind: 'entry', entry: { type: 'f', path, mode, size: o.s, mtime } }
    }
    case 'd':
      if (!validMode(mode)) refuse(lineNo, `${quotePath(path)}: mode`)
      return { kind: 'entry', entry: { type: 'd', path, mode, mtime } }
    case 'l': {
      const target = nameOf(o, 'l', lineNo)
      if (target === undefined) refuse(lineNo, `${quotePath(path)}: link target`)
      const linkProblem = linkTargetProblem(target)
      if (linkProblem) refuse(lineNo, `${quotePath(path)}: ${linkProblem}`)
      return { kind: 'entry', entry: { type: 'l', path, target, mtime } }
    }
    default:
      refuse(lineNo, `unknown entry type ${JSON.stringify(o.t)}`)
  }
}
