import { lstat, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { formatBytes } from '../core/format-bytes.js'
import { asSnapshotError, NoSnapshotError, VerifyError } from '../core/errors.js'
import { planRetention, type RetentionFile, type RetentionPlan } from '../core/retention-plan.js'
import type { SnapshotRecord } from '../core/snapshot-record.js'
import { fsyncDir } from '../fs/durable.js'
import { acquireLock } from '../fs/lock-file.js'
import { StoreLayout } from '../store/store-layout.js'
import { StoreClient } from '../store/store-client.js'

/**
 * `snapshot prune` and the automatic policy of `snapshot build --keep N`: reads what the store
 * holds, lets the pure planner (core/retention-plan.ts) choose, and removes. Records go first and
 * their objects after, so a crash in between leaves unreferenced objects (removed next time),
 * never a record that names a missing object. Runs under the store's build lock: a build never
 * writes while prune judges what is unreferenced.
 */
export interface PruneOptions {
  readonly store: string
  readonly keep: number
  readonly graceMs: number
  readonly dryRun?: boolean
  readonly now?: () => Date
  readonly lockWaitMs?: number
  readonly log?: (line: string) => void
}

export interface PruneResult {
  readonly dryRun: boolean
  readonly keep: number
  readonly graceSeconds: number
  readonly latest: number | null
  readonly kept: readonly number[]
  readonly held: readonly { id: number; reason: string }[]
  readonly removed: { readonly snapshots: readonly number[]; readonly objects: number; readonly bytes: number; readonly temps: number }
  /** Unreferenced objects and temp files left for now because they are younger than the grace period. */
  readonly young: { readonly objects: number; readonly temps: number }
}

/** A pull may still be fetching what the pointer named this long ago; a build may still be writing a file this young. */
export const DEFAULT_GRACE_SECONDS = 3600

const OBJECT_NAME = /^[0-9a-f]{64}\.[a-z.]+$/
const TEMP_NAME = /^\..+\.tmp$/ // durable.ts tempPathFor: `.${name}.${uuid}.tmp`
/** Work directories of `snapshot rollback --store` (fleet-rollback.ts). */
export const ROLLBACK_WORK_PREFIX = 'rollback-'

export async function pruneStore(opts: PruneOptions): Promise<PruneResult> {
  const layout = new StoreLayout(opts.store)
  const st = await lstat(layout.stateDir).catch(() => null)
  if (!st?.isDirectory()) throw new NoSnapshotError(`${opts.store} is not a store (no .state directory): nothing to prune`)
  const lock = await acquireLock(layout.lock, `store ${opts.store}`, { waitMs: opts.lockWaitMs ?? 0 })
  try {
    return await pruneLocked(layout, opts)
  } finally {
    lock.release()
  }
}

/** The caller holds the store's lock (build.ts calls this after publishing). */
export async function pruneLocked(layout: StoreLayout, opts: Omit<PruneOptions, 'store' | 'lockWaitMs'>): Promise<PruneResult> {
  const log = opts.log ?? (() => undefined)
  const now = (opts.now ?? (() => new Date()))()
  const pointer = await StoreClient.local(layout.root).pointerOrNull()
  const { records, mtimes } = await readAllRecords(layout)
  const plan = planRetention({
    latestId: pointer?.latest.id ?? 0,
    chain: pointer?.chain ?? [],
    records,
    recordMtimeMs: mtimes,
    objects: await listFiles(layout, 'objects', (name) => OBJECT_NAME.test(name)),
    temps: await listTemps(layout),
    keep: opts.keep,
    nowMs: now.getTime(),
    graceMs: opts.graceMs,
  })
  const dryRun = opts.dryRun ?? false
  if (!dryRun) await apply(layout, plan, log)
  const bytes = plan.removeObjects.reduce((sum, o) => sum + o.size, 0)
  return {
    dryRun,
    keep: opts.keep,
    graceSeconds: opts.graceMs / 1000,
    latest: pointer?.latest.id ?? null,
    kept: plan.keptIds,
    held: plan.heldIds,
    removed: { snapshots: plan.removeIds, objects: plan.removeObjects.length, bytes, temps: plan.removeTemps.length },
    young: { objects: plan.heldObjects.length, temps: plan.heldTemps.length },
  }
}

async function apply(layout: StoreLayout, plan: RetentionPlan, log: (line: string) => void): Promise<void> {
  try {
    if (plan.removeIds.length > 0) {
      for (const id of plan.removeIds) await rm(layout.record(id), { force: true })
      fsyncDir(layout.snapshotsDir) // the records are gone for good before their objects go
      log(`removed ${plan.removeIds.length} snapshot record(s): ${describeIds(plan.removeIds)}`)
    }
    if (plan.removeObjects.length > 0) {
      for (const o of plan.removeObjects) await rm(layout.object(o.path), { force: true })
      fsyncDir(layout.objectsDir)
      log(`removed ${plan.removeObjects.length} object(s)`)
    }
    for (const t of plan.removeTemps) await rm(join(layout.root, t.path), { recursive: true, force: true })
    if (plan.removeTemps.length > 0) log(`removed ${plan.removeTemps.length} stale temp file(s)`)
  } catch (err) {
    throw asSnapshotError(err, `pruning ${layout.root}`)
  }
}

/** Records are parsed for structure only; a damaged one stops the prune (its objects would look unreferenced). */
async function readAllRecords(layout: StoreLayout): Promise<{ records: Map<number, SnapshotRecord>; mtimes: Map<number, number> }> {
  const records = new Map<number, SnapshotRecord>()
  const mtimes = new Map<number, number>()
  const store = StoreClient.local(layout.root)
  for (const name of await readdir(layout.snapshotsDir).catch(() => [] as string[])) {
    const m = /^(\d+)\.json$/.exec(name)
    if (!m) continue
    const id = Number(m[1])
    let record: SnapshotRecord | undefined
    try {
      record = await store.record(id)
    } catch (err) {
      throw new VerifyError(`snapshots/${name} is damaged (${(err as Error).message}); refusing to prune: run \`snapshot verify --store\``, { cause: err })
    }
    const st = await lstat(layout.record(id)).catch(() => null)
    if (!record || !st) continue // removed meanwhile
    records.set(id, record)
    mtimes.set(id, st.mtimeMs)
  }
  return { records, mtimes }
}

async function listFiles(layout: StoreLayout, dir: string, want: (name: string) => boolean): Promise<RetentionFile[]> {
  const out: RetentionFile[] = []
  for (const name of await readdir(join(layout.root, dir)).catch(() => [] as string[])) {
    if (!want(name)) continue
    const st = await lstat(join(layout.root, dir, name)).catch(() => null)
    if (st) out.push({ path: dir === '.' ? name : `${dir}/${name}`, mtimeMs: st.mtimeMs, size: st.isFile() ? st.size : 0 })
  }
  return out
}

/** Atomic-write temp files wherever the master writes, and rollback work directories in .state. */
async function listTemps(layout: StoreLayout): Promise<RetentionFile[]> {
  const temps: RetentionFile[] = []
  for (const dir of ['.', 'objects', 'snapshots']) temps.push(...(await listFiles(layout, dir, (n) => TEMP_NAME.test(n))))
  temps.push(...(await listFiles(layout, '.state', (n) => TEMP_NAME.test(n) || n.startsWith(ROLLBACK_WORK_PREFIX))))
  return temps
}

export function describeIds(ids: readonly number[]): string {
  if (ids.length === 0) return 'none'
  const parts: string[] = []
  let start = ids[0]!
  let prev = start
  for (const id of [...ids.slice(1), NaN]) {
    if (id === prev + 1) {
      prev = id
      continue
    }
    parts.push(start === prev ? `${start}` : `${start}-${prev}`)
    start = id
    prev = id
  }
  return parts.join(', ')
}

/** What a prune did (or would do), in a few plain lines: for `snapshot prune` and `build --keep`. */
export function describePrune(r: PruneResult): string[] {
  const verb = r.dryRun ? 'would remove' : 'removed'
  const held = r.held.filter((h) => h.reason === 'grace').map((h) => h.id)
  return [
    `${verb} snapshots ${describeIds(r.removed.snapshots)}, ${r.removed.objects} objects (${formatBytes(r.removed.bytes)}), ${r.removed.temps} temp files; kept ${describeIds(r.kept)}`,
    ...(held.length ? [`held for the grace period (${r.graceSeconds} s, pulls may still fetch them): snapshots ${describeIds(held)}`] : []),
    ...(r.young.objects + r.young.temps > 0 ? [`left ${r.young.objects} unreferenced objects and ${r.young.temps} temp files younger than the grace period`] : []),
  ]
}
