import { UnsafeArchiveError } from './errors.js'
import { CARRIED_MODE_BITS, type ManifestEntry } from './tree-entry.js'
import { linkTargetProblem, pathProblem } from './tree-path.js'

/**
 * A manifest is newline-delimited JSON (zstd-compressed in the store):
 *   1. a header line;
 *   2. the deleted paths, in descending order (children before their parents);
 *   3. the entries the archive carries, in ascending order, the archive's own order.
 * Order is JavaScript string order (UTF-16 code units) on both sides, so a replica can check the
 * archive against the manifest in lockstep with constant memory, and a repeated or unnamed entry
 * shows as a break in the order.
 * Entries carry no content hash (format 2): the archive's bytes are vouched for by the sha256 the
 * signed record names for the whole archive, and a full archive's content by the tree digest.
 */
export const MANIFEST_FORMAT = 'playlist-snapshot-manifest/2'

export interface ManifestHeader {
  readonly manifest: typeof MANIFEST_FORMAT
  readonly id: number
  readonly kind: 'full' | 'delta'
  readonly base: number | null // the snapshot a delta applies to
  readonly entries: number
  readonly deleted: number
}

export function encodeHeaderLine(h: ManifestHeader): string {
  return JSON.stringify(h) + '\n'
}
export function encodeDeletionLine(path: string): string {
  return JSON.stringify({ t: '-', p: path }) + '\n'
}
/** A TreeEntry's content hash is not written: the manifest carries what a ManifestEntry holds. */
export function encodeEntryLine(e: ManifestEntry): string {
  switch (e.type) {
    case 'f':
      return JSON.stringify({ t: 'f', p: e.path, m: e.mode, s: e.size }) + '\n'
    case 'd':
      return JSON.stringify({ t: 'd', p: e.path, m: e.mode }) + '\n'
    case 'l':
      return JSON.stringify({ t: 'l', p: e.path, l: e.target }) + '\n'
  }
}

function refuse(lineNo: number, what: string): never {
  throw new UnsafeArchiveError(`manifest line ${lineNo}: ${what}`)
}

export function parseHeaderLine(line: string): ManifestHeader {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(line) as Record<string, unknown>
  } catch {
    refuse(1, 'not JSON')
  }
  if (o.manifest !== MANIFEST_FORMAT) refuse(1, `unknown manifest format (expected ${MANIFEST_FORMAT})`)
  if (o.kind !== 'full' && o.kind !== 'delta') refuse(1, 'kind')
  const counts = [o.id, o.entries, o.deleted]
  if (!counts.every((n) => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0)) refuse(1, 'counts')
  if (o.base !== null && !(typeof o.base === 'number' && Number.isSafeInteger(o.base))) refuse(1, 'base')
  return o as unknown as ManifestHeader
}

export type ManifestLine = { kind: 'deleted'; path: string } | { kind: 'entry'; entry: ManifestEntry }

/** Parses and checks one body line: every path and link target must be safe to write. */
export function parseBodyLine(line: string, lineNo: number): ManifestLine {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(line) as Record<string, unknown>
  } catch {
    refuse(lineNo, 'not JSON')
  }
  const path = o.p
  if (typeof path !== 'string') refuse(lineNo, 'no path')
  const problem = pathProblem(path)
  if (problem) refuse(lineNo, `${JSON.stringify(path)}: ${problem}`)
  const mode = o.m
  const validMode = typeof mode === 'number' && Number.isInteger(mode) && mode >= 0 && (mode & ~CARRIED_MODE_BITS) === 0 // no setuid/setgid
  switch (o.t) {
    case '-':
      return { kind: 'deleted', path }
    case 'f': {
      if (!validMode) refuse(lineNo, `${JSON.stringify(path)}: mode`)
      if (typeof o.s !== 'number' || !Number.isSafeInteger(o.s) || o.s < 0) refuse(lineNo, `${JSON.stringify(path)}: size`)
      return { kind: 'entry', entry: { type: 'f', path, mode: mode as number, size: o.s } }
    }
    case 'd':
      if (!validMode) refuse(lineNo, `${JSON.stringify(path)}: mode`)
      return { kind: 'entry', entry: { type: 'd', path, mode: mode as number } }
    case 'l': {
      if (typeof o.l !== 'string') refuse(lineNo, `${JSON.stringify(path)}: link target`)
      const linkProblem = linkTargetProblem(path, o.l)
      if (linkProblem) refuse(lineNo, `${JSON.stringify(path)}: ${linkProblem}`)
      return { kind: 'entry', entry: { type: 'l', path, target: o.l } }
    }
    default:
      refuse(lineNo, `unknown entry type ${JSON.stringify(o.t)}`)
  }
}
