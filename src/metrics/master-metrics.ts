import { readdir, stat } from 'node:fs/promises'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { BuildResult } from '../master/build.js'
import type { PruneResult } from '../master/prune.js'
import { StoreLayout } from '../store/store-layout.js'
import { exitCodeName, exitCodeOf } from './exit-code.js'

/**
 * The master's metrics: `snapshot build` (one-shot or `--cron`) and `snapshot prune`. Builds and
 * prunes register apart: each one-shot command writes its own textfile, and node_exporter refuses
 * a series that two files both carry (and a prune's file must not say "never built").
 */
export interface BuildMetrics {
  readonly lastBuildTime: Gauge
  readonly lastBuildExitCode: Gauge
  readonly lastBuildDuration: Gauge
  readonly lastBuildKind: Gauge
  readonly lastBuildChanges: Gauge
  readonly lastBuildDeltaBytes: Gauge
  readonly lastBuildFullBytes: Gauge
  readonly latestId: Gauge
  readonly storeBytes: Gauge
  readonly builds: Counter
}

export interface PruneMetrics {
  readonly prunes: Counter
  readonly lastPruneTime: Gauge
  readonly prunedSnapshots: Counter
  readonly prunedBytes: Counter
}

export const BUILD_KINDS = ['full', 'delta', 'unchanged'] as const

function makers(registry: Registry) {
  const registers = [registry]
  return {
    gauge: (name: string, help: string, labelNames: string[] = []): Gauge => new Gauge({ name, help, labelNames, registers }),
    counter: (name: string, help: string, labelNames: string[] = []): Counter => new Counter({ name, help, labelNames, registers }),
  }
}

export function createBuildMetrics(registry: Registry): BuildMetrics {
  const { gauge, counter } = makers(registry)
  return {
    lastBuildTime: gauge('snapshot_master_last_build_timestamp_seconds', 'When the last successful build ended (a new snapshot or an unchanged tree), Unix seconds; 0: never.'),
    lastBuildExitCode: gauge('snapshot_master_last_build_exit_code', 'Exit code of the last build (README "Exit codes").'),
    lastBuildDuration: gauge('snapshot_master_last_build_duration_seconds', 'How long the last build took.'),
    lastBuildKind: gauge('snapshot_master_last_build_kind', 'What the last successful build made: 1 for its kind (full, delta, or unchanged: no new snapshot), 0 for the others.', ['kind']),
    lastBuildChanges: gauge('snapshot_master_last_build_changes', 'Entries changed plus paths deleted by the last successful build.'),
    lastBuildDeltaBytes: gauge('snapshot_master_last_build_delta_bytes', 'Compressed size of the last build\'s delta archive (0: none).'),
    lastBuildFullBytes: gauge('snapshot_master_last_build_full_bytes', 'Compressed size of the last build\'s full archive (0: none).'),
    latestId: gauge('snapshot_master_latest_id', 'Id of the latest snapshot the store publishes.'),
    storeBytes: gauge('snapshot_master_store_bytes', 'Bytes of all objects (archives and manifests) in the store.'),
    builds: counter('snapshot_master_builds_total', 'Builds by result: full, delta, unchanged, or the name of the exit code they failed with (locked, failure, no_space...).', ['result']),
  }
}

export function createPruneMetrics(registry: Registry): PruneMetrics {
  const { gauge, counter } = makers(registry)
  return {
    prunes: counter('snapshot_master_prunes_total', 'Prunes (`snapshot prune` and `build --keep`) by result: ok, dry_run, or the exit code\'s name.', ['result']),
    lastPruneTime: gauge('snapshot_master_last_prune_timestamp_seconds', 'When the last successful prune ended, Unix seconds; 0: never.'),
    prunedSnapshots: counter('snapshot_master_pruned_snapshots_total', 'Snapshots removed by prunes.'),
    prunedBytes: counter('snapshot_master_pruned_bytes_total', 'Bytes of objects removed by prunes.'),
  }
}

/** Records one build's outcome (the seam `build`, `build --cron` call after each run). */
export function recordBuildOutcome(m: BuildMetrics, outcome: { result: BuildResult | null; error: unknown }, seconds: number, nowMs: number = Date.now(), prune: PruneMetrics | null = null): void {
  const code = exitCodeOf(outcome.error)
  const r = outcome.result
  m.lastBuildExitCode.set(code)
  m.lastBuildDuration.set(seconds)
  if (code !== 0 || !r) {
    m.builds.inc({ result: exitCodeName(code) })
    return
  }
  const kind = r.created ? r.kind : 'unchanged'
  m.builds.inc({ result: kind })
  m.lastBuildTime.set(nowMs / 1000)
  for (const k of BUILD_KINDS) m.lastBuildKind.set({ kind: k }, k === kind ? 1 : 0)
  m.lastBuildChanges.set(r.created ? r.changed + r.deleted : 0)
  m.lastBuildDeltaBytes.set(r.created ? (r.deltaBytes ?? 0) : 0)
  m.lastBuildFullBytes.set(r.created ? (r.fullBytes ?? 0) : 0)
  m.latestId.set(r.id)
  if (r.pruned && prune) recordPruneOutcome(prune, { result: r.pruned, error: null }, nowMs)
}

export function recordPruneOutcome(m: PruneMetrics, outcome: { result: PruneResult | null; error: unknown }, nowMs: number = Date.now()): void {
  const code = exitCodeOf(outcome.error)
  const r = outcome.result
  if (code !== 0 || !r) {
    m.prunes.inc({ result: exitCodeName(code) })
    return
  }
  m.prunes.inc({ result: r.dryRun ? 'dry_run' : 'ok' })
  if (r.dryRun) return
  m.lastPruneTime.set(nowMs / 1000)
  m.prunedSnapshots.inc(r.removed.snapshots.length)
  m.prunedBytes.inc(r.removed.bytes)
}

/** Sums the sizes of the store's objects: a few hundred files, one stat each. */
export async function recordStoreBytes(m: BuildMetrics, store: string): Promise<void> {
  const dir = new StoreLayout(store).objectsDir
  const names = await readdir(dir).catch(() => [] as string[])
  let total = 0
  for (const n of names) {
    if (n.startsWith('.')) continue // a build's temp file
    total += (await stat(`${dir}/${n}`).catch(() => null))?.size ?? 0
  }
  m.storeBytes.set(total)
}
