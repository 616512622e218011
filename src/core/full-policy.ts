import type { SnapshotRecord } from './snapshot-record.js'

/**
 * When a build also writes a full archive. A replica that is far behind, or new, downloads the
 * latest full plus the deltas after it; this policy bounds that to about (1 + ratio) times a full,
 * and the chain of deltas to `maxChain` links, while replicas that keep up only ever take deltas.
 */
export interface FullPolicy {
  /** Write a full once the deltas since the last full add up to this share of the full's size. */
  readonly deltaBytesRatio: number
  /** ...or once this many deltas follow the last full. */
  readonly maxChain: number
}
export const DEFAULT_FULL_POLICY: FullPolicy = { deltaBytesRatio: 1.0, maxChain: 48 }

export interface FullDecision {
  readonly full: boolean
  readonly reason: string
}

export function decideFull(input: {
  policy: FullPolicy
  forced: boolean
  /** The chain the pointer carries: from the latest full through the latest snapshot. */
  chain: readonly SnapshotRecord[]
  /** Compressed bytes of the delta this build just wrote. */
  thisDeltaBytes: number
}): FullDecision {
  if (input.forced) return { full: true, reason: '--full was given' }
  const lastFull = [...input.chain].reverse().find((r) => r.full)
  if (!lastFull?.full) return { full: true, reason: 'the store has no full archive yet' }
  const after = input.chain.filter((r) => r.id > lastFull.id)
  if (after.length + 1 >= input.policy.maxChain) {
    return { full: true, reason: `${after.length + 1} deltas since the last full (policy: ${input.policy.maxChain})` }
  }
  const fullBytes = lastFull.full.archive.length + lastFull.full.manifest.length
  const deltaBytes = after.reduce((sum, r) => sum + (r.delta ? r.delta.archive.length + r.delta.manifest.length : 0), 0) + input.thisDeltaBytes
  if (deltaBytes >= input.policy.deltaBytesRatio * fullBytes) {
    return { full: true, reason: `deltas since the last full reach ${Math.round((100 * deltaBytes) / fullBytes)}% of its size (policy: ${Math.round(100 * input.policy.deltaBytesRatio)}%)` }
  }
  return { full: false, reason: 'a delta is cheaper for replicas' }
}
