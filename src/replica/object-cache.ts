import { sha256OfFile } from '../fs/file-sha256.js'
import { mkdir, readdir, rm, stat } from 'node:fs/promises'
import { recordObjects, type ObjectRef, type SnapshotRecord } from '../core/snapshot-record.js'
import type { ObjectSource } from '../store/object-source.js'
import type { ReplicaLayout } from './replica-layout.js'
import type { ReplicaState } from './replica-state.js'

/**
 * Objects a replica downloaded, kept so a recycled tree can replay the deltas it missed without
 * fetching them again. A cached object is hashed again before every use: verify, then trust.
 */
export async function isCached(layout: ReplicaLayout, ref: ObjectRef): Promise<boolean> {
  const st = await stat(layout.object(ref.path)).catch(() => null)
  return st !== null && st.size === ref.length
}

export async function ensureObject(layout: ReplicaLayout, source: ObjectSource, ref: ObjectRef, progress?: (bytes: number) => void): Promise<string> {
  const file = layout.object(ref.path)
  if (await isCached(layout, ref)) {
    if ((await sha256OfFile(file)) === ref.sha256) return file
    await rm(file, { force: true })
  }
  await mkdir(layout.objectsDir, { recursive: true })
  // Not flushed: a cached object is hashed before every use, and the tree built from it is flushed.
  await source.fetchObject(ref.path, file, { sha256: ref.sha256, length: ref.length, flush: false }, progress)
  return file
}

/**
 * Keeps only objects that a kept tree may still replay: those of snapshots newer than the oldest
 * tree, where an empty tree counts as needing the latest full archive and the deltas after it.
 */
export async function pruneObjectCache(layout: ReplicaLayout, state: ReplicaState, records: ReadonlyMap<number, SnapshotRecord>): Promise<void> {
  const latestFull = Math.max(0, ...[...records.values()].filter((r) => r.full).map((r) => r.id))
  const needs = Object.values(state.slots).map((s) => (s.status === 'ready' ? s.id : s.status === 'dirty' && s.base !== null ? s.base : latestFull - 1))
  const oldest = Math.min(...needs)
  const keep = new Set<string>()
  for (const r of records.values()) if (r.id > oldest) for (const ref of recordObjects(r)) keep.add(ref.path)
  const names = await readdir(layout.objectsDir).catch(() => [] as string[])
  for (const name of names) {
    if (!keep.has(`objects/${name}`)) await rm(`${layout.objectsDir}/${name}`, { force: true })
  }
}
