import type { KeyObject } from 'node:crypto'
import { lstat, mkdir, readdir, readFile, readlink, rename, rm } from 'node:fs/promises'
import { randomUUID } from 'node:crypto'
import { decompressFile, decompressFileToBuffer } from '../archive/decompress.js'
import { pairOf, planPull, type PullPlan } from '../core/chain-plan.js'
import { asSnapshotError, GuardTrippedError, HookFailedError, HookVetoError, NoSnapshotError, NoSpaceError, RollbackRefusedError, SnapshotError, UnsafeArchiveError, UsageError, VerifyError } from '../core/errors.js'
import { openEnvelope, parsePointerPayload, parseRecordPayload, type PointerPayload } from '../core/pointer.js'
import { parseSnapshotRecord, recordObjects, type SnapshotRecord } from '../core/snapshot-record.js'
import { MAX_PATH_BYTES } from '../core/tree-path.js'
import { crashPoint } from '../fs/crash-points.js'
import { BackgroundFlush, swapSymlink, syncFilesystem, writeFileAtomic } from '../fs/durable.js'
import { acquireLock } from '../fs/lock-file.js'
import type { ObjectSource } from '../store/object-source.js'
import { applyArchive, type ApplyStats } from '../restore/apply-archive.js'
import { ManifestCursor } from '../restore/manifest-cursor.js'
import { ensureObject, isCached } from './object-cache.js'
import { ReplicaLayout } from './replica-layout.js'
import { runHook } from './swap-hooks.js'
import { freshState, loadState, saveState, type ReplicaState } from './replica-state.js'
import { atLowPriority } from './low-priority.js'
import { catchUpSlot, chooseSlot, slotBase } from './slot-policy.js'

/**
 * `snapshot pull`: bring a tree that is not live up to the store's latest snapshot, verify it,
 * flush it, and (with swap) make it live by renaming a new symlink over PATH. Nothing live is
 * touched before that rename, so any failure leaves the replica serving what it served.
 */
export interface PullOptions {
  readonly source: ObjectSource
  readonly target: string
  readonly stateDir?: string
  readonly trustedKeys: readonly KeyObject[]
  readonly swap: boolean
  /** How many trees to keep (live, staging, and older ones for instant rollback). */
  readonly trees?: number
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
  readonly progress?: (phase: string, done: number, total: number, bytes: number) => void
  readonly log?: (line: string) => void
  readonly now?: () => Date
}

export interface SwapHooks {
  readonly preSwap?: string
  readonly postSwap?: string
  readonly timeoutMs?: number
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

const POINTER_MAX_BYTES = 4 << 20
const MAX_RECORD_WALK = 10_000

export function slotNames(trees: number): string[] {
  if (!Number.isInteger(trees) || trees < 2 || trees > 26) throw new UsageError('--trees must be a whole number from 2 to 26')
  return Array.from({ length: trees }, (_, i) => String.fromCharCode(97 + i))
}

export async function pull(opts: PullOptions): Promise<PullResult> {
  const started = process.hrtime.bigint()
  const log = opts.log ?? (() => undefined)
  const now = opts.now ?? (() => new Date())
  const layout = new ReplicaLayout(opts.target, opts.stateDir)
  const slots = slotNames(opts.trees ?? 2)
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

/** The latest snapshot's parent's build time: signed in its record, or (older records) from the pointer's chain. */
export function parentCreated(pointer: { latest: SnapshotRecord; chain: readonly SnapshotRecord[] }): { latestParentCreated?: string } {
  const created = pointer.latest.parentCreated ?? pointer.chain.find((r) => r.id === pointer.latest.parent)?.created
  return created !== undefined ? { latestParentCreated: created } : {}
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
  state.source = opts.source.description
  const pointer = await fetchPointer(opts.source, opts.trustedKeys)
  const latest = pointer.latest
  if (latest.id < state.highestSeen) {
    throw new RollbackRefusedError(
      `${opts.source.description} offers snapshot ${latest.id}, but this replica already had snapshot ${state.highestSeen}: refusing to go back (a stale mirror, a restored old store, or a rollback attack)`,
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
  const records = await collectRecords(opts.source, layout, opts.trustedKeys, pointer, baseId)
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
    applied = await buildInSlot(layout, state, slot, latest, plan, opts.source, log, opts.progress)
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

/** The cheapest plan from `baseId` to `latestId`, counting objects already cached as free. */
export async function planFor(layout: ReplicaLayout, records: ReadonlyMap<number, SnapshotRecord>, baseId: number | null, latestId: number): Promise<PullPlan> {
  const cachedShas = new Set<string>()
  for (const r of records.values()) for (const ref of recordObjects(r)) if (await isCached(layout, ref)) cachedShas.add(ref.sha256)
  return planPull({ baseId, latestId, records, cached: (sha) => cachedShas.has(sha) })
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
      for (const [id, r] of await collectRecords(opts.source, layout, opts.trustedKeys, pointer, baseId, liveRecord)) records.set(id, r)
      const plan = await planFor(layout, records, baseId, live.id)
      log(`catching up tree ${slot}: ${describePlan(plan)}`)
      const applied = await buildInSlot(layout, state, slot, liveRecord, plan, opts.source, log)
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
  progress?: PullOptions['progress'],
): Promise<ApplyStats> {
  if (state.staged?.slot === slot) state.staged = null
  state.slots[slot] = { status: 'dirty', base: plan.baseId, target: target.id }
  await saveState(layout.stateFile, state)
  if (plan.baseId === null) await emptyTree(layout, slot)

  const applied: ApplyStats = { filesWritten: 0, dirsMade: 0, linksMade: 0, deleted: 0, bytesWritten: 0 }
  const flush = new BackgroundFlush(layout.tree(slot))
  for (const [i, step] of plan.steps.entries()) {
    const pair = pairOf(step)
    crashPoint('pull:download:before')
    const manifestFile = await ensureObject(layout, source, pair.manifest)
    const archiveFile = await ensureObject(layout, source, pair.archive)
    crashPoint('pull:download:after')
    const maxManifest = (pair.entries + pair.deleted + 1) * (2 * MAX_PATH_BYTES + 256)
    const cursor = new ManifestCursor(await decompressFileToBuffer(manifestFile, maxManifest, `manifest of snapshot ${step.record.id}`))
    checkManifestHeader(cursor, step.record, step.use, pair.entries, pair.deleted)
    log(`applying ${step.use} of snapshot ${step.record.id}: ${pair.entries} entries, ${pair.deleted} deletions`)
    crashPoint('pull:apply:before')
    const stats = await applyArchive({
      root: layout.tree(slot),
      manifest: cursor,
      tarChunks: decompressFile(archiveFile, pair.archive.tarBytes, `the archive of snapshot ${step.record.id}`),
      tarBytes: pair.archive.tarBytes,
      ...(step.use === 'full' ? { expectDigest: step.record.treeDigest } : {}),
      intoEmptyTree: plan.baseId === null && i === 0,
      onProgress: (n: number, bytes: number) => {
        crashPoint('pull:apply:progress') // every 4096 entries, and once when all are written
        if (n < pair.entries) flush.nudge() // at the end the syncFilesystem below flushes: a nudge would sync twice
        progress?.(`applying ${step.use} ${step.record.id}`, n, pair.entries, bytes)
      },
    })
    crashPoint('pull:apply:after')
    for (const k of Object.keys(applied) as (keyof ApplyStats)[]) applied[k] += stats[k]
  }
  crashPoint('pull:flush')
  await flush.settle()
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
async function discardFullTree(layout: ReplicaLayout, state: ReplicaState, slot: string, id: number, err: unknown, log: (l: string) => void): Promise<NoSpaceError> {
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

/** PATH must be absent or a symlink into our trees: never replace an operator's own directory. */
export async function checkTarget(layout: ReplicaLayout): Promise<void> {
  const st = await lstat(layout.target).catch(() => null)
  if (!st) return
  if (!st.isSymbolicLink()) {
    throw new UsageError(`--target ${layout.target} exists and is not a symlink made by snapshot; move it aside or choose another path`)
  }
  const value = await readlink(layout.target)
  if (!slotNames(26).some((s) => value === layout.linkValue(s))) {
    throw new UsageError(`--target ${layout.target} is a symlink to ${value}, which snapshot did not make; remove it or choose another path`)
  }
}

export async function fetchPointer(source: ObjectSource, keys: readonly KeyObject[]): Promise<PointerPayload> {
  const bytes = await source.getSmall('latest.json', POINTER_MAX_BYTES)
  if (!bytes) throw new NoSnapshotError(`${source.description} has no snapshot yet (no latest.json)`)
  return parsePointerPayload(openEnvelope(bytes, keys))
}

/**
 * Records from the pointer, the local cache and snapshots/<id>.json, walking parents from the
 * latest back to `baseId` (or to a full archive). Each fetched record is verified like the pointer.
 */
export async function collectRecords(source: ObjectSource, layout: ReplicaLayout, keys: readonly KeyObject[], pointer: PointerPayload, baseId: number | null, start: SnapshotRecord = pointer.latest): Promise<Map<number, SnapshotRecord>> {
  const records = new Map<number, SnapshotRecord>()
  for (const r of pointer.chain) records.set(r.id, r)
  records.set(start.id, start)
  await mkdir(layout.recordsDir, { recursive: true })
  let r: SnapshotRecord | undefined = start
  let sawFull = false
  for (let steps = 0; r && steps < MAX_RECORD_WALK; steps++) {
    sawFull ||= r.full !== undefined
    if (r.parent === null || (baseId !== null && r.id <= baseId) || (baseId === null && sawFull)) break
    const parentId: number = r.parent
    let parent: SnapshotRecord | undefined = records.get(parentId)
    if (!parent) parent = (await loadCachedRecord(layout, parentId)) ?? (await fetchRecord(source, layout, keys, parentId).catch(unverifiable))
    if (!parent) break // no way back through it: the plan takes a full archive instead
    records.set(parent.id, parent)
    r = parent
  }
  for (const rec of pointer.chain) await cacheRecord(layout, rec)
  return records
}

/**
 * A parent record that does not verify (a snapshot signed by a key this replica does not trust,
 * which it refused when it was the latest) cannot be a step of the plan, but must not fail a pull
 * to a later, trusted snapshot that carries a full archive: it ends the walk back instead.
 */
function unverifiable(err: unknown): undefined {
  if (err instanceof VerifyError) return undefined
  throw err
}

/** The local record cache holds records already verified (by signature or through the pointer). */
export async function loadCachedRecord(layout: ReplicaLayout, id: number): Promise<SnapshotRecord | undefined> {
  const text = await readFile(layout.record(id), 'utf8').catch(() => null)
  if (!text) return undefined
  try {
    const record = parseSnapshotRecord(JSON.parse(text))
    return record.id === id ? record : undefined
  } catch {
    return undefined // a damaged cache entry: fetch it again
  }
}

export async function fetchRecord(source: ObjectSource, layout: ReplicaLayout, keys: readonly KeyObject[], id: number): Promise<SnapshotRecord | undefined> {
  const bytes = await source.getSmall(`snapshots/${id}.json`, POINTER_MAX_BYTES)
  if (!bytes) return undefined
  const record = parseRecordPayload(openEnvelope(bytes, keys), id)
  await cacheRecord(layout, record)
  return record
}

async function cacheRecord(layout: ReplicaLayout, record: SnapshotRecord): Promise<void> {
  const have = await lstat(layout.record(record.id)).catch(() => null)
  if (!have) await writeFileAtomic(layout.record(record.id), JSON.stringify(record) + '\n')
}

function checkManifestHeader(cursor: ManifestCursor, record: SnapshotRecord, use: 'full' | 'delta', entries: number, deleted: number): void {
  const h = cursor.header
  const base = use === 'full' ? null : record.parent
  if (h.id !== record.id || h.kind !== use || h.base !== base || h.entries !== entries || h.deleted !== deleted) {
    throw new UnsafeArchiveError(`the ${use} manifest of snapshot ${record.id} does not match its signed record (mix-and-match of objects?)`)
  }
}

async function emptyTree(layout: ReplicaLayout, slot: string): Promise<void> {
  const dir = layout.tree(slot)
  if (await lstat(dir).catch(() => null)) {
    await mkdir(layout.trashDir, { recursive: true })
    await rename(dir, `${layout.trashDir}/${slot}-${randomUUID()}`) // removed after the pull, off the critical path
  }
  await mkdir(dir, { recursive: true })
}

/**
 * Makes the staged tree live by renaming a new symlink over PATH: readers see old or new, never a
 * gap. A pre-swap hook that fails vetoes the swap and leaves the snapshot staged.
 */
export async function swapToStaged(layout: ReplicaLayout, state: ReplicaState, log: (l: string) => void, hooks: SwapHooks = {}): Promise<number> {
  crashPoint('pull:swap')
  const staged = state.staged
  if (!staged) throw new SnapshotError('nothing is staged: run `snapshot pull` first')
  const slotState = state.slots[staged.slot]
  if (slotState?.status !== 'ready' || slotState.id !== staged.id) throw new SnapshotError(`the staged tree ${staged.slot} is not ready; run \`snapshot pull\` again`)
  const env = { SNAPSHOT_ID: String(staged.id), SNAPSHOT_TREE: layout.tree(staged.slot), SNAPSHOT_TARGET: layout.target }
  const timeoutMs = hooks.timeoutMs ?? 300_000
  if (hooks.preSwap) {
    const r = await runHook(hooks.preSwap, env, timeoutMs)
    if (!r.ok) throw new HookVetoError(`the pre-swap hook vetoed snapshot ${staged.id} (exit ${r.code ?? 'none'}): it stays staged, nothing live changed${r.output ? `\n${r.output}` : ''}`)
    log('pre-swap hook passed')
  }
  await swapSymlink(layout.target, layout.linkValue(staged.slot))
  const swappedAtMs = Date.now()
  state.live = { slot: staged.slot, id: staged.id, since: new Date().toISOString() }
  state.staged = null
  await saveState(layout.stateFile, state)
  log(`swapped: ${layout.target} now serves snapshot ${staged.id}`)
  if (hooks.postSwap) {
    const r = await runHook(hooks.postSwap, env, timeoutMs)
    if (!r.ok) throw new HookFailedError(`swapped to snapshot ${staged.id}, but the post-swap hook failed (exit ${r.code ?? 'none'})${r.output ? `\n${r.output}` : ''}`)
    log('post-swap hook done')
  }
  return swappedAtMs
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

function describePlan(plan: PullPlan): string {
  const steps = plan.steps.map((s) => `${s.use} ${s.record.id}`).join(', ')
  return `${steps} from ${plan.baseId === null ? 'an empty tree' : `snapshot ${plan.baseId}`}, ${plan.downloadBytes} bytes to download`
}
