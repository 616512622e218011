import { VerifyError } from './errors.js'
import { isMtime } from './mtime.js'
import { CARRIED_MODE_BITS, type RootMeta } from './tree-entry.js'

/**
 * What the store says about one snapshot. Records reach replicas through untrusted networks, so
 * `parseSnapshotRecord` checks every field before anything else reads it (the signature having
 * been checked first, by pointer.ts).
 */
export interface ObjectRef {
  readonly path: string // relative to the store root: objects/<sha256>.<ext>
  readonly sha256: string
  readonly length: number
}
export interface ArchiveRef extends ObjectRef {
  /** Exact size of the uncompressed tar stream: decompression stops beyond it (bombs). */
  readonly tarBytes: number
}
/** One archive and its manifest: either a whole tree or the change from the parent. */
export interface ArchivePair {
  readonly archive: ArchiveRef
  readonly manifest: ObjectRef
  readonly entries: number // entries the archive carries
  readonly deleted: number // paths the manifest deletes
}
export type SnapshotKind = 'full' | 'delta'

export interface SnapshotRecord {
  readonly id: number
  readonly parent: number | null
  readonly created: string // ISO 8601, UTC
  /** The parent's `created` (absent on a first snapshot, and in records written before it existed). */
  readonly parentCreated?: string
  /** 'full' when the snapshot carries a whole-tree archive (it may carry a delta as well). */
  readonly kind: SnapshotKind
  readonly treeDigest: string
  readonly files: number
  readonly dirs: number
  readonly links: number
  readonly bytes: number
  /** Change against `parent`; absent on a first snapshot. */
  readonly delta?: ArchivePair
  readonly full?: ArchivePair
  /** Set when this snapshot republishes an older tree (fleet rollback). */
  readonly rollbackOf?: number
  /** The root directory's mode and mtime (absent in records written before manifest format 3). */
  readonly root?: RootMeta
}

export function recordObjects(r: SnapshotRecord): ObjectRef[] {
  const out: ObjectRef[] = []
  for (const pair of [r.delta, r.full]) if (pair) out.push(pair.archive, pair.manifest)
  return out
}

const HEX64 = /^[0-9a-f]{64}$/
const OBJECT_PATH = /^objects\/[0-9a-f]{64}\.[a-z.]+$/

function fail(what: string): never {
  throw new VerifyError(`malformed snapshot record: ${what}`)
}
function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}
function objectRef(v: unknown, where: string): ObjectRef {
  const o = v as Record<string, unknown> | null
  if (typeof o !== 'object' || o === null) fail(`${where} is not an object`)
  if (typeof o.path !== 'string' || !OBJECT_PATH.test(o.path)) fail(`${where}.path`)
  if (typeof o.sha256 !== 'string' || !HEX64.test(o.sha256)) fail(`${where}.sha256`)
  if (!o.path.startsWith(`objects/${o.sha256}.`)) fail(`${where}.path does not carry its sha256`)
  if (!isCount(o.length)) fail(`${where}.length`)
  return { path: o.path, sha256: o.sha256, length: o.length }
}
function archivePair(v: unknown, where: string): ArchivePair {
  const o = v as Record<string, unknown> | null
  if (typeof o !== 'object' || o === null) fail(`${where} is not an object`)
  const archive = objectRef(o.archive, `${where}.archive`)
  const tarBytes = (o.archive as Record<string, unknown>).tarBytes
  if (!isCount(tarBytes) || tarBytes % 512 !== 0) fail(`${where}.archive.tarBytes`)
  const manifest = objectRef(o.manifest, `${where}.manifest`)
  if (!isCount(o.entries) || !isCount(o.deleted)) fail(`${where} counts`)
  return { archive: { ...archive, tarBytes }, manifest, entries: o.entries, deleted: o.deleted }
}

export function parseSnapshotRecord(v: unknown): SnapshotRecord {
  const o = v as Record<string, unknown> | null
  if (typeof o !== 'object' || o === null) fail('not an object')
  if (!isCount(o.id) || o.id < 1) fail('id')
  if (o.parent !== null && (!isCount(o.parent) || o.parent >= o.id)) fail('parent')
  if (typeof o.created !== 'string' || Number.isNaN(Date.parse(o.created))) fail('created')
  if (o.parentCreated !== undefined && (typeof o.parentCreated !== 'string' || Number.isNaN(Date.parse(o.parentCreated)) || o.parent === null)) fail('parentCreated')
  if (o.kind !== 'full' && o.kind !== 'delta') fail('kind')
  if (typeof o.treeDigest !== 'string' || !HEX64.test(o.treeDigest)) fail('treeDigest')
  for (const k of ['files', 'dirs', 'links', 'bytes'] as const) if (!isCount(o[k])) fail(k)
  const delta = o.delta === undefined ? undefined : archivePair(o.delta, 'delta')
  const full = o.full === undefined ? undefined : archivePair(o.full, 'full')
  if (o.kind === 'full' && !full) fail('a full snapshot without a full archive')
  if (o.kind === 'delta' && (!delta || full)) fail('a delta snapshot must carry exactly a delta')
  if (delta && o.parent === null) fail('a delta without a parent')
  if (o.rollbackOf !== undefined && (!isCount(o.rollbackOf) || o.rollbackOf >= o.id)) fail('rollbackOf')
  const root = o.root as Record<string, unknown> | undefined
  if (root !== undefined && (typeof root !== 'object' || root === null || !isCount(root.mode) || (root.mode & ~CARRIED_MODE_BITS) !== 0 || !isMtime(root.mtime))) fail('root')
  return {
    id: o.id,
    parent: o.parent as number | null,
    created: o.created,
    ...(o.parentCreated !== undefined ? { parentCreated: o.parentCreated as string } : {}),
    kind: o.kind,
    treeDigest: o.treeDigest,
    files: o.files as number,
    dirs: o.dirs as number,
    links: o.links as number,
    bytes: o.bytes as number,
    ...(delta ? { delta } : {}),
    ...(full ? { full } : {}),
    ...(o.rollbackOf !== undefined ? { rollbackOf: o.rollbackOf as number } : {}),
    ...(root !== undefined ? { root: { mode: root.mode as number, mtime: root.mtime as string } } : {}),
  }
}
