import { Counter, Gauge, type Registry } from 'prom-client'
import type { PullResult } from '../replica/pull.js'
import type { ReplicaStatus } from '../replica/replica-status.js'
import { errorCodeOf, exitCodeName, exitCodeOf, REFUSAL_EXIT_CODES } from './exit-code.js'

/**
 * A replica's metrics (`snapshot pull` one-shot, `--cron`, and the watch loop): what it serves,
 * how far behind the store it is, and how its pulls end. Timestamps are Unix seconds; "behind"
 * is how much older the live snapshot is than the store's latest, by their signed build times.
 */
export interface ReplicaMetrics {
  readonly liveId: Gauge
  readonly liveBuildTime: Gauge
  readonly storeLatestId: Gauge
  readonly storeLatestBuildTime: Gauge
  readonly behindSeconds: Gauge
  readonly lastPullExitCode: Gauge
  readonly lastPullTime: Gauge
  readonly lastPullDuration: Gauge
  readonly lastSuccessTime: Gauge
  readonly pulls: Counter
  readonly swaps: Counter
  readonly refusals: Counter
  readonly downloadedBytes: Counter
  readonly entriesWritten: Counter
  readonly entriesDeleted: Counter
  readonly treesOnDisk: Gauge
  readonly pinned: Gauge
}

export function createReplicaMetrics(registry: Registry): ReplicaMetrics {
  const registers = [registry]
  const gauge = (name: string, help: string): Gauge => new Gauge({ name, help, registers })
  const counter = (name: string, help: string, labelNames: string[] = []): Counter => new Counter({ name, help, labelNames, registers })
  return {
    liveId: gauge('snapshot_replica_live_id', 'Id of the snapshot the replica serves (0: none yet).'),
    liveBuildTime: gauge('snapshot_replica_live_build_timestamp_seconds', 'When the live snapshot was built on the master (its signed time), Unix seconds; 0 when unknown.'),
    storeLatestId: gauge('snapshot_replica_store_latest_id', 'Id of the store\'s latest snapshot, as the last pull that read the pointer saw it.'),
    storeLatestBuildTime: gauge('snapshot_replica_store_latest_build_timestamp_seconds', 'When the store\'s latest snapshot was built (its signed time), Unix seconds.'),
    behindSeconds: gauge('snapshot_replica_behind_seconds', 'How much older the live snapshot is than the store\'s latest, by their build times (0: up to date).'),
    lastPullExitCode: gauge('snapshot_replica_last_pull_exit_code', 'Exit code of the last pull (README "Exit codes"): 0 ok, 3 verification failed, 4 network, 13 stale...'),
    lastPullTime: gauge('snapshot_replica_last_pull_timestamp_seconds', 'When the last pull ended, Unix seconds.'),
    lastPullDuration: gauge('snapshot_replica_last_pull_duration_seconds', 'How long the last pull took.'),
    lastSuccessTime: gauge('snapshot_replica_last_success_timestamp_seconds', 'When the last pull that exited 0 ended, Unix seconds (0: never).'),
    pulls: counter('snapshot_replica_pulls_total', 'Pulls by result: swapped, staged, up_to_date, pinned, or the name of the exit code they failed with (stale, verify_failed, network, refused...).', ['result']),
    swaps: counter('snapshot_replica_swaps_total', 'Snapshots made live by a pull.'),
    refusals: counter('snapshot_replica_refusals_total', 'Snapshots refused (bad signature or hash, hostile archive, older store, deletion guard, pre-swap veto), by error code.', ['reason']),
    downloadedBytes: counter('snapshot_replica_downloaded_bytes_total', 'Bytes of archives the pulls planned to download (objects not already cached).'),
    entriesWritten: counter('snapshot_replica_entries_written_total', 'Files, directories and symlinks written into trees by pulls.'),
    entriesDeleted: counter('snapshot_replica_entries_deleted_total', 'Paths deleted from trees by pulls.'),
    treesOnDisk: gauge('snapshot_replica_trees_on_disk', 'Trees the replica keeps on disk (live, previous, spare), not counting empty slots.'),
    pinned: gauge('snapshot_replica_pinned', '1 when a rollback pinned the replica (pulls change nothing until unpinned), else 0.'),
  }
}

/** How one pull ended: its result, its error, or both (a pull that worked, then found the store stale: exit 13). */
export interface PullOutcome {
  readonly result: PullResult | null
  readonly error: unknown
}

const SECONDS = (ms: number): number => ms / 1000

/**
 * Records one pull's outcome. The seam the scheduled and watch loops call after each cycle; pure
 * apart from the metrics it updates.
 */
export function recordPullOutcome(m: ReplicaMetrics, outcome: PullOutcome, seconds: number, nowMs: number = Date.now()): void {
  const code = exitCodeOf(outcome.error)
  const r = outcome.result
  m.lastPullExitCode.set(code)
  m.lastPullTime.set(SECONDS(nowMs))
  m.lastPullDuration.set(seconds)
  if (code === 0) m.lastSuccessTime.set(SECONDS(nowMs))
  m.pulls.inc({ result: code === 0 && r ? r.action.replace('-', '_') : exitCodeName(code) })
  if (REFUSAL_EXIT_CODES.has(code)) m.refusals.inc({ reason: errorCodeOf(outcome.error) })
  if (!r) return
  if (r.action === 'swapped') m.swaps.inc()
  if (r.plan) m.downloadedBytes.inc(r.plan.downloadBytes)
  const written = r.applied.filesWritten + r.applied.dirsMade + r.applied.linksMade + (r.catchUp?.filesWritten ?? 0)
  m.entriesWritten.inc(written)
  m.entriesDeleted.inc(r.applied.deleted)
  if (r.latestCreated !== null) {
    m.storeLatestId.set(r.id)
    m.storeLatestBuildTime.set(SECONDS(Date.parse(r.latestCreated)))
  }
}

/**
 * Records what the replica's state says (live snapshot, pin, trees), read after each pull. The
 * store's latest comes from the status when it asked the store, else from the last pull.
 */
export async function recordReplicaStatus(m: ReplicaMetrics, s: ReplicaStatus): Promise<void> {
  m.liveId.set(s.live?.id ?? 0)
  const liveBuilt = s.live?.created ? SECONDS(Date.parse(s.live.created)) : 0
  m.liveBuildTime.set(liveBuilt)
  m.pinned.set(s.pinned ? 1 : 0)
  m.treesOnDisk.set(Object.values(s.trees).filter((t) => t.status !== 'empty').length)
  if (s.store && 'latestId' in s.store) {
    m.storeLatestId.set(s.store.latestId)
    m.storeLatestBuildTime.set(SECONDS(Date.parse(s.store.created)))
  }
  const latestId = (await m.storeLatestId.get()).values[0]?.value ?? 0
  const latestBuilt = (await m.storeLatestBuildTime.get()).values[0]?.value ?? 0
  const current = s.live !== null && s.live.id >= latestId
  m.behindSeconds.set(current || latestBuilt === 0 || liveBuilt === 0 ? 0 : Math.max(0, latestBuilt - liveBuilt))
}
