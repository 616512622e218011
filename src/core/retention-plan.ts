import { recordObjects, type SnapshotRecord } from './snapshot-record.js'

/**
 * Which snapshots and files `snapshot prune` removes: a function on data (records, the clock, the
 * files' ages), so the rules below are tested without a disk.
 *
 * Kept, always:
 * - the pointer's chain: the latest full and every delta after it, which is what any replica,
 *   new or far behind, needs to reach the latest;
 * - the `keep` most recent published snapshots, each with what rebuilds it (the full before it and
 *   the deltas in between), so each of them can still be pulled or rolled back to;
 * - records with an id above the latest: a build in progress, or the id of one that died (removing
 *   it would let the next build reuse the id, and a cache may hold the old bytes under that name);
 * - every object a kept record names.
 *
 * Held back by the grace period, because a pull in progress may still fetch them:
 * - a superseded snapshot, until `graceMs` after the full that took its place in the chain;
 * - a record no published snapshot leads to (a build that died before the pointer moved), an
 *   object no record names, and a temp file, until `graceMs` after their last write.
 */
export interface RetentionFile {
  /** Relative to the store root: `objects/<sha256>.<ext>`, `.state/<name>`, ... */
  readonly path: string
  readonly mtimeMs: number
  readonly size: number
}

export interface RetentionInput {
  /** The pointer's latest id; 0 when the store has no pointer yet. */
  readonly latestId: number
  /** The pointer's chain (latest full through latest): kept whatever else is on disk. */
  readonly chain: readonly SnapshotRecord[]
  /** Every record readable on disk, by id. */
  readonly records: ReadonlyMap<number, SnapshotRecord>
  /** Last write of each record file, by id. */
  readonly recordMtimeMs: ReadonlyMap<number, number>
  /** Files in objects/ named like objects. */
  readonly objects: readonly RetentionFile[]
  /** Temp files and work directories a build or rollback leaves behind when it dies. */
  readonly temps: readonly RetentionFile[]
  readonly keep: number
  readonly nowMs: number
  readonly graceMs: number
}

export type HoldReason = 'grace' | 'unpublished'
export interface RetentionPlan {
  /** Published snapshots that stay, ascending. */
  readonly keptIds: readonly number[]
  /** Records that stay only for now (grace) or because they may belong to a build in progress. */
  readonly heldIds: readonly { id: number; reason: HoldReason }[]
  /** Records to remove, ascending: superseded snapshots and records of builds that died. */
  readonly removeIds: readonly number[]
  readonly removeObjects: readonly RetentionFile[]
  /** Objects no kept record names, left alone because they are younger than the grace period. */
  readonly heldObjects: readonly RetentionFile[]
  readonly removeTemps: readonly RetentionFile[]
  readonly heldTemps: readonly RetentionFile[]
}

export function planRetention(input: RetentionInput): RetentionPlan {
  if (!Number.isSafeInteger(input.keep) || input.keep < 1) throw new RangeError('keep must be at least 1')
  const records = new Map(input.records)
  for (const r of input.chain) if (!records.has(r.id)) records.set(r.id, r)
  const old = (mtimeMs: number): boolean => input.nowMs - mtimeMs >= input.graceMs

  // The published history: parents from the latest, as far back as records remain.
  const lineage: SnapshotRecord[] = [] // newest first
  for (let r = records.get(input.latestId); r; r = r.parent === null ? undefined : records.get(r.parent)) {
    if (lineage.length > 0 && r.id >= lineage[lineage.length - 1]!.id) break // a loop: malformed
    lineage.push(r)
  }
  const published = new Set(lineage.map((r) => r.id))

  const kept = new Set<number>(input.chain.map((r) => r.id))
  /** The record and those before it, back to (and with) the nearest full archive. */
  const keepRestorable = (start: number): void => {
    for (let i = start; i < lineage.length; i++) {
      kept.add(lineage[i]!.id)
      if (lineage[i]!.full) return
    }
  }
  keepRestorable(0)
  for (let i = 0; i < Math.min(input.keep, lineage.length); i++) keepRestorable(i)

  const held: { id: number; reason: HoldReason }[] = []
  const remove: number[] = []
  for (const id of [...records.keys()].sort((a, b) => a - b)) {
    if (kept.has(id)) continue
    if (id > input.latestId) held.push({ id, reason: 'unpublished' })
    else if (published.has(id)) {
      // In the chain until the next full was published: pulls that started before may use it.
      const next = lineage.filter((r) => r.id > id && r.full).at(-1)
      const supersededMs = next ? Date.parse(next.created) : input.nowMs
      if (old(supersededMs)) remove.push(id)
      else held.push({ id, reason: 'grace' })
    } else if (old(input.recordMtimeMs.get(id) ?? input.nowMs)) remove.push(id)
    else held.push({ id, reason: 'grace' })
  }

  const needed = new Set<string>()
  const named = new Set<string>()
  const removing = new Set(remove)
  for (const r of records.values()) {
    for (const ref of recordObjects(r)) {
      named.add(ref.path)
      if (!removing.has(r.id)) needed.add(ref.path)
    }
  }
  const removeObjects: RetentionFile[] = []
  const heldObjects: RetentionFile[] = []
  for (const o of [...input.objects].sort(byPath)) {
    if (needed.has(o.path)) continue
    // Named only by records being removed: their grace was judged with the record.
    if (named.has(o.path) || old(o.mtimeMs)) removeObjects.push(o)
    else heldObjects.push(o)
  }
  const removeTemps = input.temps.filter((t) => old(t.mtimeMs)).sort(byPath)
  const heldTemps = input.temps.filter((t) => !old(t.mtimeMs)).sort(byPath)
  return {
    keptIds: [...kept].filter((id) => records.has(id)).sort((a, b) => a - b),
    heldIds: held,
    removeIds: remove,
    removeObjects,
    heldObjects,
    removeTemps,
    heldTemps,
  }
}

function byPath(a: RetentionFile, b: RetentionFile): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0
}
