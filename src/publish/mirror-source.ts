import { flushFile } from '../fs/durable.js'
import { sha256OfFile } from '../fs/file-sha256.js'
import { readFile, rm } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { NoSnapshotError, RollbackRefusedError, UnsafeArchiveError, VerifyError, asSnapshotError } from '../core/errors.js'
import type { PointerPayload } from '../core/pointer.js'
import { recordObjects, type ObjectRef, type SnapshotRecord } from '../core/snapshot-record.js'
import type { StoreClient } from '../store/store-client.js'
import type { TrustedKeys } from '../store/trusted-keys.js'
import type { StoreFile } from './publish-plan.js'
import { POINTER_MAX_BYTES, viewOf, type CopySource } from './store-copy.js'
import type { PutOutcome, StoreDestination } from './store-destination.js'

/**
 * The remote side of `snapshot mirror`: a store read as a replica reads it (an http(s)://, s3://
 * or directory source, or several mirrors of it), offered to store-copy.ts as a copy source whose
 * every file is checked before it reaches the destination:
 *
 * - the pointer must verify under the trusted keys, and must not be older than the one the
 *   destination holds (a relay never moves back, as a replica never does);
 * - the files are what a replica pulls: the records of the pointer's chain (the latest back to
 *   the latest full) and the archives and manifests they name. Each record must verify and equal
 *   the chain's; each object is downloaded to its signed length and sha256 (object-source.ts) and
 *   only then renamed into place, so a relay never holds a byte the master did not sign;
 * - what the destination already holds at the right size is confirmed: in a directory, hashed once
 *   per process (`verified` remembers it across a --watch); in a bucket, its size is trusted, as
 *   publish trusts it. A file that does not confirm is sent again.
 */
export interface RemoteStoreOptions {
  /** The origin, read under the keys the relay trusts. */
  readonly store: StoreClient
  readonly to: StoreDestination
  /** What the destination holds (files by size, and its pointer); files that do not confirm are taken out. */
  readonly remote: { readonly files: Map<string, number>; readonly pointer: Buffer | null }
  /** Where objects for a destination that is not a directory wait between download and upload. */
  readonly stagingDir: string
  /** Destination paths already confirmed by this process. */
  readonly verified: Set<string>
  readonly log?: (line: string) => void
}

export interface RemoteStore {
  readonly source: CopySource
  readonly pointer: PointerPayload
}

export async function readRemoteStore(o: RemoteStoreOptions): Promise<RemoteStore> {
  const log = o.log ?? (() => undefined)
  const origin = o.store.source
  const pointerBytes = await origin.getSmall('latest.json', POINTER_MAX_BYTES)
  if (!pointerBytes) throw new NoSnapshotError(`${origin.description} has no snapshot yet (no latest.json): nothing to mirror`)
  const pointer = o.store.trust.pointer(pointerBytes)
  const held = o.remote.pointer ? viewOf(o.remote.pointer) : null
  if (held && held.id > pointer.latest.id) {
    throw new RollbackRefusedError(
      `${origin.description} offers snapshot ${pointer.latest.id}, but ${o.to.description} already offers snapshot ${held.id}: refusing to move the relay back (a stale mirror, or a restored old origin); it keeps offering snapshot ${held.id}`,
    )
  }

  const objects = new Map<string, ObjectRef>()
  for (const r of pointer.chain) for (const ref of recordObjects(r)) objects.set(ref.path, ref)
  for (const ref of objects.values()) {
    if (o.remote.files.get(ref.path) !== ref.length || o.verified.has(ref.path)) continue
    const local = o.to.localPath(ref.path)
    if (local === null) continue // a bucket: a key of the signed length holds the object, as publish trusts
    const actual = await sha256OfFile(local).catch(() => null)
    if (actual === ref.sha256) o.verified.add(ref.path)
    else {
      log(`warning: ${local} does not match its signed sha256: sending it again`)
      o.remote.files.delete(ref.path)
    }
  }

  // The records the relay lacks are fetched while the objects are (not one round trip before
  // them): a relay's replicas wait for its objects (http/mirror-hold.ts), not for its records.
  // Each is checked before anything of it is written; an object is written first anyway.
  const recordFetches = new Map<string, Promise<Buffer>>()
  const records: StoreFile[] = []
  for (const r of pointer.chain) {
    const path = `snapshots/${r.id}.json`
    const size = o.remote.files.get(path)
    if (size !== undefined && (await confirmRecord(o, path, r))) {
      records.push({ path, size })
      continue
    }
    o.remote.files.delete(path)
    const fetching = fetchRecord(o, path, r)
    fetching.catch(() => undefined) // awaited when it is sent; a failure is thrown there
    recordFetches.set(path, fetching)
    records.push({ path, size: 0 }) // not held: sent whatever its size (0: not known yet, not counted)
  }

  const send = async (f: StoreFile, to: StoreDestination): Promise<PutOutcome> => {
    const fetching = recordFetches.get(f.path)
    if (fetching) {
      await to.putBytes(f.path, await fetching)
      o.verified.add(f.path)
      return 'put'
    }
    const ref = objects.get(f.path)
    if (!ref) throw new VerifyError(`${f.path} is not named by the pointer`) // a bug of ours: the plan only sends what we listed
    const landing = to.localPath(f.path)
    if (landing !== null) {
      // Downloaded beside its final name, checked, and renamed onto it; the relay's server hands it
      // to the replicas waiting for it at once. Flushed before this returns, so before any record
      // or pointer names it (store-copy.ts sends those after every object).
      await origin.fetchObject(f.path, landing, { ...ref, flush: false })
      await flushFile(landing)
      o.verified.add(f.path)
      return 'put'
    }
    const staged = join(o.stagingDir, basename(f.path))
    try {
      await origin.fetchObject(f.path, staged, ref)
      return await to.putFile(f.path, staged, ref.length)
    } finally {
      await rm(staged, { force: true })
    }
  }

  return {
    pointer,
    source: {
      description: origin.description,
      pointer: { bytes: pointerBytes, view: { id: pointer.latest.id, chain: pointer.chain } },
      objects: [...objects.values()].map((ref) => ({ path: ref.path, size: ref.length })).sort((a, b) => (a.path < b.path ? -1 : 1)),
      records,
      send,
    },
  }
}

/** A record of the pointer's chain from the origin, checked against the chain. */
async function fetchRecord(o: RemoteStoreOptions, path: string, r: SnapshotRecord): Promise<Buffer> {
  const origin = o.store.source
  const bytes = await origin.getSmall(path, POINTER_MAX_BYTES)
  if (!bytes) throw new NoSnapshotError(`${origin.description} has no ${path}, which its pointer names: the origin is damaged (run \`snapshot verify --store\` there)`)
  checkRecord(bytes, r, o.store.trust, `${origin.description}: ${path}`)
  return bytes
}

/** A record the destination holds: in a directory, read back and checked once; in a bucket, trusted by its presence. */
async function confirmRecord(o: RemoteStoreOptions, path: string, r: SnapshotRecord): Promise<boolean> {
  if (o.verified.has(path)) return true
  const local = o.to.localPath(path)
  if (local === null) return true
  try {
    checkRecord(await readFile(local), r, o.store.trust, local)
  } catch (err) {
    ;(o.log ?? (() => undefined))(`warning: ${local} does not match the signed pointer (${asSnapshotError(err, local).message}): sending it again`)
    return false
  }
  o.verified.add(path)
  return true
}

/** The record's envelope verifies, and says exactly what the signed pointer's chain says. */
function checkRecord(bytes: Buffer, expected: SnapshotRecord, trust: TrustedKeys, what: string): void {
  const record = trust.record(bytes, expected.id)
  if (JSON.stringify(record) !== JSON.stringify(expected)) {
    throw new UnsafeArchiveError(`${what} differs from the record the signed pointer carries (mix-and-match of snapshots?)`)
  }
}
