import { lstat, mkdir, rm } from 'node:fs/promises'
import type { PullPlan } from '../core/chain-plan.js'
import { asSnapshotError, GuardTrippedError, NoSpaceError, RollbackRefusedError, SnapshotError } from '../core/errors.js'
import { parentCreated, type PointerPayload } from '../core/pointer.js'
import type { SnapshotRecord } from '../core/snapshot-record.js'
import { acquireLock } from '../fs/lock-file.js'
import type { ApplyStats } from '../restore/apply-archive.js'
import type { StoreClient } from '../store/store-client.js'
import { atLowPriority } from './low-priority.js'
import { pruneObjectCache } from './object-cache.js'
import { collectRecords, loadCachedRecord } from './record-cache.js'
import { checkTarget, ReplicaLayout, slotNames, TREES } from './replica-layout.js'
import { freshState, loadState, saveState, type ReplicaState } from './replica-state.js'
import { buildInSlot, discardFullTree, planFor, type BuildProgress } from './slot-build.js'
import { catchUpSlot, chooseSlot, slotBase } from './slot-policy.js'
import { swapToStaged, type SwapHooks } from './staged-swap.js'

/**
 * `snapshot pull`: bring a tree that is not live up to the store's latest snapshot, verify it,
 * flush it, and (with swap) make it live by renaming a new symlink over PATH. Nothing live is
 * touched before that rename, so any failure leaves the replica serving what it served.
 */
export interface PullOptions {
  /** The store, its trusted keys bound. */
  readonly store: StoreClient
  readonly target: string
  readonly stateDir?: string
  readonly swap: boolean
  /** How many trees to keep (live, staging, and older ones for instant rollback). */
  readonly trees?: number
  /** Threads writing a tree's small files at once (file-writers.ts). */
  readonly writerThreads?: number
  readonly lockWaitMs?: number
  /** Clear a pin left by `snapshot rollback` and pull as usual. */
  readonly unpin?: boolean
  /** Refuse to swap in a snapshot that deletes more than this share (0-100) of the live tree's entries. */
  readonly maxDeletePercent?: number
  /** Swap even when the mass-deletion guard trips. */
  readonly force?: boolean
  readonly hooks?: SwapHooks
  /** Run the spare's catch-up after the swap at the lowest CPU priority (low-priority.ts). */
  readonly lowPriorityCatchUp?: boolean
  readonly progress?: BuildProgress
  readonly log?: (line: string) => void
  readonly now?: () => Date
}

export type PullAction = 'up-to-date' | 'staged' | 'swapped' | 'pinned'
export interface PullResult {
  readonly action: PullAction
  readonly id: number
  readonly previousId: number | null
  readonly plan: { steps: { id: number; use: 'full' | 'delta' }[]; downloadBytes: number; baseId: number | null } | null
  readonly applied: ApplyStats
  /** When the store's latest snapshot was built (its signed time); null when pinned. */
  readonly latestCreated: string | null
  /** Its parent's build time, when the pointer's chain holds the parent: a later one means the master's clock went back. */
  readonly latestParentCreated?: string
  /** Wall-clock time (epoch ms) of the swap's rename; null when nothing was swapped. */
  readonly swappedAtMs: number | null
  /** The spare tree brought up to the new live snapshot after the swap (a new replica's second tree, or with three or more trees the spare); null when none was. */
  readonly catchUp: CatchUpResult | null
  readonly seconds: number
}

export interface CatchUpResult {
  readonly slot: string
  readonly id: number
  readonly filesWritten: number
  readonly seconds: number
  /** Set when the catch-up failed: the swap stands, the spare stays dirty and the next pull replays it. */
  readonly error?: string
}

export async function pull(opts: PullOptions): Promise<PullResult> {
  const started = process.hrtime.bigint()
  const log = opts.log ?? (() => undefined)
  const now = opts.now ?? (() => new Date())
  const layout = new ReplicaLayout(opts.target, opts.stateDir)
  const slots = slotNames(opts.trees ?? TREES.default)
  await checkTarget(layout)
  await mkdir(layout.stateDir, { recursive: true })
  const lock = await acquireLock(layout.lock, `replica ${opts.target}`, { waitMs: opts.lockWaitMs ?? 0 })
  let state = (await loadState(layout.stateFile, slots)) ?? freshState(slots)
  try {
    const result = await pullLocked(opts, layout, state, slots, log, started)
    state = (await loadState(layout.stateFile, slots)) ?? state
    state.lastPull = { at: now().toISOString(), ok: true, id: result.id }
    await saveState(layout.stateFile, state)
    return result
  } catch (err) {
    const e = asSnapshotError(err, 'pull')
    state = (await loadState(layout.stateFile, slots).catch(() => null)) ?? state
    state.lastPull = { at: now().toISOString(), ok: false, code: e.code, error: e.message }
    await saveState(layout.stateFile, state).catch(() => undefined)
    throw e
  } finally {
    lock.release()
    await rm(layout.trashDir, { recursive: true, force: true }).catch(() => undefined)
  }
}

async function pullLocked(opts: PullOptions, layout: ReplicaLayout, state: ReplicaState, slots: readonly string[], log: (l: string) => void, started: bigint): Promise<PullResult> {
  const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9
  const noWork: ApplyStats = { filesWritten: 0, dirsMade: 0, linksMade: 0, deleted: 0, bytesWritten: 0 }
  if (state.pinned && !opts.unpin) {
    log(`pinned at snapshot ${state.pinned.id} since ${state.pinned.since} (${state.pinned.reason}): nothing changed; \`snapshot pull --unpin\` or \`snapshot unpin\` resumes pulls`)
    const id = state.live?.id ?? state.pinned.id
    return { action: 'pinned', id, previousId: id, plan: null, applied: noWork, latestCreated: null, swappedAtMs: null, catchUp: null, seconds: seconds() }
  }
  if (state.pinned) {
    log(`unpinned (was pinned at snapshot ${state.pinned.id})`)
    state.pinned = null
  }
  state.source = opts.store.description
  const pointer = await opts.store.pointer()
  const latest = pointer.latest
  if (latest.id < state.highestSeen) {
    throw new RollbackRefusedError(
      `${opts.store.description} offers snapshot ${latest.id}, but this replica already had snapshot ${state.highestSeen}: refusing to go back (a stale mirror, a restored old store, or a rollback attack)`,
    )
  }
  state.highestSeen = latest.id
  const previousId = state.live?.id ?? null

  if (state.live?.id === latest.id) {
    log(`up to date at snapshot ${latest.id}`)
    await saveState(layout.stateFile, state)
    return { action: 'up-to-date', id: latest.id, previousId, plan: null, applied: noWork, latestCreated: latest.created, ...parentCreated(pointer), swappedAtMs: null, catchUp: null, seconds: seconds() }
  }
  if (state.staged?.id === latest.id && state.slots[state.staged.slot]?.status === 'ready') {
    log(`snapshot ${latest.id} is already staged`)
    await saveState(layout.stateFile, state)
    const swappedAtMs = opts.swap ? await swapToStaged(layout, state, log, opts.hooks) : null
    const catchUp = opts.swap ? await catchUpSpare(opts, layout, state, slots, pointer, new Map(), log) : null
    return { action: opts.swap ? 'swapped' : 'staged', id: latest.id, previousId, plan: null, applied: noWork, latestCreated: latest.created, ...parentCreated(pointer), swappedAtMs, catchUp, seconds: seconds() }
  }

  for (const [name, st] of Object.entries(state.slots)) {
    if (st.status !== 'empty' && name !== state.live?.slot && !(await lstat(layout.tree(name)).catch(() => null))) state.slots[name] = { status: 'empty' }
  }
  const slot = chooseSlot(state)
  const slotState = state.slots[slot]!
  const baseId = slotBase(slotState)
  const records = await collectRecords(opts.store, layout, pointer, baseId)
  const plan = await planFor(layout, records, baseId, latest.id)
  log(`plan: ${describePlan(plan)} into tree ${slot}`)
  if (opts.swap && state.live) {
    // The live snapshot may predate the pointer's chain (a full came since): its record is cached.
    const liveRecord = records.get(state.live.id) ?? (await loadCachedRecord(layout, state.live.id))
    if (liveRecord) records.set(liveRecord.id, liveRecord)
    checkMassDeletion(records, state.live.id, latest, opts.maxDeletePercent ?? 20, opts.force ?? false)
  }

  let applied: ApplyStats
  try {
    applied = await buildInSlot(layout, state, slot, latest, plan, opts.store.source, log, opts.progress, opts.writerThreads)
  } catch (err) {
    if (asSnapshotError(err, '') instanceof NoSpaceError) throw await discardFullTree(layout, state, slot, latest.id, err, log)
    throw err
  }
  state.staged = { slot, id: latest.id }
  await saveState(layout.stateFile, state)
  log(`snapshot ${latest.id} staged in tree ${slot}`)
  const swappedAtMs = opts.swap ? await swapToStaged(layout, state, log, opts.hooks) : null
  const catchUp = opts.swap ? await catchUpSpare(opts, layout, state, slots, pointer, records, log) : null
  await pruneObjectCache(layout, state, records)
  return {
    action: opts.swap ? 'swapped' : 'staged',
    id: latest.id,
    previousId,
    plan: { steps: plan.steps.map((s) => ({ id: s.record.id, use: s.use })), downloadBytes: plan.downloadBytes, baseId: plan.baseId },
    applied,
    latestCreated: latest.created,
    ...parentCreated(pointer),
    swappedAtMs,
    catchUp,
    seconds: seconds(),
  }
}

/**
 * After a swap: bring a spare (a tree neither live nor kept for rollback, slot-policy.ts) up to
 * the new live snapshot, from objects mostly cached already, so the next pull replays one hour
 * before it can swap. With three or more trees that is the oldest spare, after every swap; with
 * two it is a new replica's second tree, after its first swap: filled here from the full archive
 * the first pull downloaded, so that the second pull writes one hour of change before its swap
 * instead of the whole tree (issue 15). Filling it here costs a whole-tree write, but after the
 * swap and at low priority; a hard-link clone of the live tree (`cp -al`, ~6.5 s at 1M) would be
 * cheaper but would leave the live and the rollback tree sharing inodes, so that any metadata
 * change made in place on one (a chmod, a utimes) would change the other, the live one included:
 * two independent trees keep the rollback tree a real copy whatever the apply does.
 * It runs after the swap, off the critical path; a failure is reported, not thrown: the swap
 * stands, and the spare stays dirty for the next pull to replay. `records` gains what it read.
 */
async function catchUpSpare(opts: PullOptions, layout: ReplicaLayout, state: ReplicaState, slots: readonly string[], pointer: PointerPayload, records: Map<number, SnapshotRecord>, log: (l: string) => void): Promise<CatchUpResult | null> {
  const slot = catchUpSlot(state, slots)
  const live = state.live
  if (!slot || !live) return null
  const started = process.hrtime.bigint()
  const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9
  try {
    return await atLowPriority(opts.lowPriorityCatchUp === true, async () => {
      const baseId = slotBase(state.slots[slot]!)
      const liveRecord = records.get(live.id) ?? (pointer.latest.id === live.id ? pointer.latest : await loadCachedRecord(layout, live.id))
      if (!liveRecord) throw new SnapshotError(`the record of the live snapshot ${live.id} is not cached`)
      for (const [id, r] of await collectRecords(opts.store, layout, pointer, baseId, liveRecord)) records.set(id, r)
      const plan = await planFor(layout, records, baseId, live.id)
      log(`catching up tree ${slot}: ${describePlan(plan)}`)
      const applied = await buildInSlot(layout, state, slot, liveRecord, plan, opts.store.source, log, undefined, opts.writerThreads)
      log(`tree ${slot} caught up to snapshot ${live.id}`)
      return { slot, id: live.id, filesWritten: applied.filesWritten, seconds: seconds() }
    })
  } catch (err) {
    // A half-written spare on a full disk only holds space the next pull needs: it goes, as in a pull.
    const e = asSnapshotError(err, `catching up tree ${slot}`)
    const message = e instanceof NoSpaceError ? (await discardFullTree(layout, state, slot, live.id, err, log)).message : e.message
    log(`warning: could not catch up tree ${slot} (${message}); the next pull replays it`)
    return { slot, id: live.id, filesWritten: 0, seconds: seconds(), error: message }
  }
}

/**
 * A build run against an empty or half-mounted source would delete most of every replica: refuse
 * to swap in a snapshot whose deltas since the live one delete more than `percent` of its entries.
 */
export function checkMassDeletion(records: ReadonlyMap<number, SnapshotRecord>, liveId: number, latest: SnapshotRecord, percent: number, force: boolean): void {
  const live = records.get(liveId)
  if (!live || latest.id <= liveId) return
  const liveEntries = live.files + live.dirs + live.links
  let deleted = 0
  let r: SnapshotRecord | undefined = latest
  while (r && r.id > liveId) {
    deleted += r.delta?.deleted ?? 0
    r = r.parent === null ? undefined : records.get(r.parent)
  }
  if (r?.id !== liveId) deleted = Math.max(0, liveEntries - (latest.files + latest.dirs + latest.links)) // chain unknown: compare sizes
  if (liveEntries > 0 && deleted > (percent / 100) * liveEntries) {
    const share = Math.round((100 * deleted) / liveEntries)
    const message = `snapshot ${latest.id} deletes ${deleted} of the ${liveEntries} entries of the live snapshot ${liveId} (${share}%, over the ${percent}% guard)`
    if (!force) throw new GuardTrippedError(`${message}: not swapped. If this is intended, pull again with --force (or raise --max-delete)`)
  }
}

function describePlan(plan: PullPlan): string {
  const steps = plan.steps.map((s) => `${s.use} ${s.record.id}`).join(', ')
  return `${steps} from ${plan.baseId === null ? 'an empty tree' : `snapshot ${plan.baseId}`}, ${plan.downloadBytes} bytes to download`
}
