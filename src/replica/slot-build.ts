import { randomUUID } from 'node:crypto'
import { lstat, mkdir, rename, rm } from 'node:fs/promises'
import { pairOf, planPull, type PullPlan } from '../core/chain-plan.js'
import { NoSpaceError } from '../core/errors.js'
import { recordObjects, type SnapshotRecord } from '../core/snapshot-record.js'
import { crashPoint } from '../fs/crash-points.js'
import { BackgroundFlush, syncFilesystem } from '../fs/durable.js'
import { applyArchive, type ApplyStats } from '../restore/apply-archive.js'
import { openStep } from '../restore/open-step.js'
import type { ObjectSource } from '../store/object-source.js'
import { ensureObject, isCached } from './object-cache.js'
import type { ReplicaLayout } from './replica-layout.js'
import { saveState, type ReplicaState } from './replica-state.js'

/**
 * Building one of a replica's trees (a slot) to a snapshot, by a plan's steps: each step's objects
 * from the cache or the store, opened and applied (src/restore/), the tree flushed, and its state
 * saved around it so that a crash anywhere leaves a tree the next pull replays or rebuilds.
 */
export type BuildProgress = (phase: string, done: number, total: number, bytes: number) => void

/** The cheapest plan from `baseId` to `latestId`, counting objects already cached as free. */
export async function planFor(layout: ReplicaLayout, records: ReadonlyMap<number, SnapshotRecord>, baseId: number | null, latestId: number): Promise<PullPlan> {
  const cachedShas = new Set<string>()
  for (const r of records.values()) for (const ref of recordObjects(r)) if (await isCached(layout, ref)) cachedShas.add(ref.sha256)
  return planPull({ baseId, latestId, records, cached: (sha) => cachedShas.has(sha) })
}

/**
 * Brings tree `slot` to snapshot `target` by the plan's steps. The tree is marked dirty (with the
 * snapshot it starts from) before the first write and ready after the flush, so a crash anywhere
 * leaves a tree the next pull replays or rebuilds, never one taken for complete.
 */
export async function buildInSlot(
  layout: ReplicaLayout,
  state: ReplicaState,
  slot: string,
  target: SnapshotRecord,
  plan: PullPlan,
  source: ObjectSource,
  log: (l: string) => void,
  progress?: BuildProgress,
  /** Threads writing the tree's small files (file-writers.ts); the default when not given. */
  writerThreads?: number,
): Promise<ApplyStats> {
  if (state.staged?.slot === slot) state.staged = null
  state.slots[slot] = { status: 'dirty', base: plan.baseId, target: target.id }
  await saveState(layout.stateFile, state)
  if (plan.baseId === null) await emptyTree(layout, slot)

  const applied: ApplyStats = { filesWritten: 0, dirsMade: 0, linksMade: 0, deleted: 0, bytesWritten: 0 }
  const flush = new BackgroundFlush(layout.tree(slot))
  try {
    for (const [i, step] of plan.steps.entries()) {
      const pair = pairOf(step)
      crashPoint('pull:download:before')
      // Both at once: across an ocean, one round trip less per step.
      const [manifestFile, archiveFile] = await Promise.all([ensureObject(layout, source, pair.manifest), ensureObject(layout, source, pair.archive)])
      crashPoint('pull:download:after')
      const opened = await openStep(step, { manifest: manifestFile, archive: archiveFile })
      log(`applying ${step.use} of snapshot ${step.record.id}: ${pair.entries} entries, ${pair.deleted} deletions`)
      crashPoint('pull:apply:before')
      const stats = await applyArchive({
        root: layout.tree(slot),
        ...opened,
        intoEmptyTree: plan.baseId === null && i === 0,
        ...(writerThreads === undefined ? {} : { writerThreads }),
        onProgress: (n: number, bytes: number) => {
          crashPoint('pull:apply:progress') // every 4096 entries, and once when all are written
          if (n < pair.entries) flush.nudge() // at the end the syncFilesystem below flushes: a nudge would sync twice
          progress?.(`applying ${step.use} ${step.record.id}`, n, pair.entries, bytes)
        },
      })
      crashPoint('pull:apply:after')
      for (const k of Object.keys(applied) as (keyof ApplyStats)[]) applied[k] += stats[k]
    }
  } finally {
    await flush.close()
  }
  crashPoint('pull:flush')
  syncFilesystem(layout.tree(slot))
  state.slots[slot] = { status: 'ready', id: target.id, digest: target.treeDigest }
  await saveState(layout.stateFile, state)
  return applied
}

/**
 * The disk filled up while tree `slot` was being built. A half-built tree only holds space that
 * the next pull needs, so it goes (the next pull rebuilds that tree from a full archive); the
 * live tree and the downloaded objects stay. Returns the error to throw, saying what happened.
 */
export async function discardFullTree(layout: ReplicaLayout, state: ReplicaState, slot: string, id: number, err: unknown, log: (l: string) => void): Promise<NoSpaceError> {
  await rm(layout.tree(slot), { recursive: true, force: true }).catch(() => undefined)
  state.slots[slot] = { status: 'empty' }
  await saveState(layout.stateFile, state).catch(() => undefined) // if this fails too, the next pull sees the tree gone
  log(`the disk is full: removed the half-built tree ${slot}`)
  const detail = err instanceof Error ? err.message : String(err)
  return new NoSpaceError(
    `the disk is full while building snapshot ${id} in tree ${slot} (${detail}): the half-built tree was removed and nothing live changed; make room in ${layout.stateDir} and pull again`,
    { cause: err },
  )
}

async function emptyTree(layout: ReplicaLayout, slot: string): Promise<void> {
  const dir = layout.tree(slot)
  if (await lstat(dir).catch(() => null)) {
    await mkdir(layout.trashDir, { recursive: true })
    await rename(dir, `${layout.trashDir}/${slot}-${randomUUID()}`) // removed after the pull, off the critical path
  }
  await mkdir(dir, { recursive: true })
}
