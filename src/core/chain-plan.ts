import { NoSnapshotError } from './errors.js'
import type { ArchivePair, SnapshotRecord } from './snapshot-record.js'

/**
 * Chooses how a tree at `baseId` (or an empty one) reaches `latestId`: the chain of deltas, or the
 * nearest full archive plus the deltas after it, whichever downloads fewer bytes. Objects the
 * replica already holds cost nothing, which is what makes recycling the previous tree cheap.
 */
export interface PlanStep {
  readonly record: SnapshotRecord
  readonly use: 'full' | 'delta'
}
export interface PullPlan {
  readonly steps: readonly PlanStep[]
  readonly downloadBytes: number
  /** The tree the first step applies to: null when the plan starts from an empty tree. */
  readonly baseId: number | null
}

export function pairOf(step: PlanStep): ArchivePair {
  const pair = step.use === 'full' ? step.record.full : step.record.delta
  if (!pair) throw new Error(`snapshot ${step.record.id} has no ${step.use} archive`)
  return pair
}

export function planPull(input: {
  baseId: number | null
  latestId: number
  records: ReadonlyMap<number, SnapshotRecord>
  cached: (sha256: string) => boolean
}): PullPlan {
  const { baseId, latestId, records } = input
  const cost = (steps: PlanStep[]): number =>
    steps.reduce((sum, s) => {
      const p = pairOf(s)
      return sum + (input.cached(p.archive.sha256) ? 0 : p.archive.length) + (input.cached(p.manifest.sha256) ? 0 : p.manifest.length)
    }, 0)

  const options: PullPlan[] = []
  if (baseId !== null) {
    const deltas = walkDeltas(records, latestId, (r) => r.id <= baseId)
    if (deltas && deltas.stopAt === baseId) options.push({ steps: deltas.steps, downloadBytes: cost(deltas.steps), baseId })
  }
  const toFull = walkDeltas(records, latestId, (r) => r.full !== undefined)
  if (toFull && toFull.stopAt !== null) {
    const full = records.get(toFull.stopAt)!
    const steps: PlanStep[] = [{ record: full, use: 'full' }, ...toFull.steps]
    options.push({ steps, downloadBytes: cost(steps), baseId: null })
  }
  if (options.length === 0) {
    throw new NoSnapshotError(`cannot reach snapshot ${latestId}: the store holds neither a chain of deltas from ${baseId ?? 'nothing'} nor a full archive before it`)
  }
  return options.reduce((best, o) => (o.downloadBytes < best.downloadBytes ? o : best))
}

/** Deltas from just after the record where `stop` holds, up to `latestId`, oldest first. */
function walkDeltas(
  records: ReadonlyMap<number, SnapshotRecord>,
  latestId: number,
  stop: (r: SnapshotRecord) => boolean,
): { steps: PlanStep[]; stopAt: number | null } | null {
  const steps: PlanStep[] = []
  let r = records.get(latestId)
  while (r && !stop(r)) {
    if (!r.delta || r.parent === null) return null
    steps.unshift({ record: r, use: 'delta' })
    r = records.get(r.parent)
  }
  return { steps, stopAt: r ? r.id : null }
}
