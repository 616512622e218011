import { mkdir, rm } from 'node:fs/promises'
import { NoSnapshotError, ObjectMissingError, SnapshotError, UsageError } from '../core/errors.js'
import { swapSymlink } from '../fs/durable.js'
import { acquireLock } from '../fs/lock-file.js'
import type { StoreClient } from '../store/store-client.js'
import { collectRecords, fetchRecord, loadCachedRecord } from './record-cache.js'
import { buildInSlot, planFor } from './slot-build.js'
import { chooseSlot, rollbackSlot } from './slot-policy.js'
import { checkTarget, ReplicaLayout, slotNames, TREES } from './replica-layout.js'
import { loadState, saveState, type ReplicaState } from './replica-state.js'

/**
 * `snapshot rollback --target PATH [--to ID]`: makes an earlier snapshot live on this replica,
 * atomically. Instant when a kept tree holds it; otherwise rebuilt from the store in a tree that
 * is neither live nor the one being left. The replica is then pinned (pulls change nothing until
 * unpinned), and the tree it left is kept as evidence.
 */
export interface ReplicaRollbackOptions {
  readonly target: string
  readonly stateDir?: string
  readonly to?: number
  readonly trees?: number
  /** The store, to rebuild a snapshot that no kept tree holds. */
  readonly store?: StoreClient
  readonly lockWaitMs?: number
  readonly log?: (line: string) => void
}

export interface ReplicaRollbackResult {
  readonly from: number
  readonly to: number
  readonly instant: boolean
  readonly pinned: true
}

export async function rollbackReplica(opts: ReplicaRollbackOptions): Promise<ReplicaRollbackResult> {
  const log = opts.log ?? (() => undefined)
  const layout = new ReplicaLayout(opts.target, opts.stateDir)
  const slots = slotNames(opts.trees ?? TREES.default)
  await checkTarget(layout)
  await mkdir(layout.stateDir, { recursive: true })
  const lock = await acquireLock(layout.lock, `replica ${opts.target}`, { waitMs: opts.lockWaitMs ?? 0 })
  try {
    const state = await loadState(layout.stateFile, slots)
    if (!state?.live) throw new SnapshotError(`${opts.target} serves no snapshot yet: nothing to roll back`)
    const live = state.live
    const kept = rollbackSlot(state)
    const toId = opts.to ?? (kept === null ? null : (state.slots[kept] as { id: number }).id)
    if (toId === null) throw new NoSnapshotError(`no earlier snapshot is kept on this replica; give --to ID (and --from) to rebuild one from the store`)
    if (toId === live.id) throw new UsageError(`snapshot ${toId} is already live`)

    let slot = Object.keys(state.slots).find((s) => s !== live.slot && state.slots[s]!.status === 'ready' && (state.slots[s] as { id: number }).id === toId)
    const instant = slot !== undefined
    if (!slot) {
      if (!opts.store) throw new UsageError(`snapshot ${toId} is not kept on this replica: give --from URL|DIR to rebuild it from the store`)
      slot = rebuildSlot(state)
      const pointer = await opts.store.pointer()
      const record = (await loadCachedRecord(layout, toId)) ?? pointer.chain.find((r) => r.id === toId) ?? (await fetchRecord(opts.store, layout, toId))
      if (!record) throw new NoSnapshotError(`the store no longer has snapshot ${toId}`)
      const records = await collectRecords(opts.store, layout, pointer, null, record)
      const plan = await planFor(layout, records, null, toId)
      log(`rebuilding snapshot ${toId} in tree ${slot} from ${opts.store.description}`)
      try {
        await buildInSlot(layout, state, slot, record, plan, opts.store.source, log)
      } catch (err) {
        // The store answered: the objects are gone (pruned), which no retry or network fix brings back.
        if (err instanceof ObjectMissingError) throw new NoSnapshotError(`cannot rebuild snapshot ${toId}: ${err.message}; \`snapshot list --from\` shows what the store can still give`, { cause: err })
        throw err
      }
    }
    await swapSymlink(layout.target, layout.linkValue(slot))
    state.live = { slot, id: toId, since: new Date().toISOString() }
    if (state.staged?.slot === slot) state.staged = null
    state.pinned = { id: toId, since: new Date().toISOString(), reason: `rolled back from snapshot ${live.id}` }
    await saveState(layout.stateFile, state)
    log(`rolled back: ${opts.target} serves snapshot ${toId} (was ${live.id}); pinned until \`snapshot unpin\``)
    return { from: live.id, to: toId, instant, pinned: true }
  } finally {
    lock.release()
    await rm(layout.trashDir, { recursive: true, force: true }).catch(() => undefined) // a rebuilt tree's predecessor
  }
}

/** A tree to rebuild in: not live, and not the one holding the snapshot being left if avoidable. */
function rebuildSlot(state: ReplicaState): string {
  const others = Object.keys(state.slots).filter((s) => s !== state.live?.slot)
  return others.length > 0 ? chooseSlot(state) : others[0]!
}

/** `snapshot unpin` (and `pull --unpin`): later pulls move the replica again. */
export async function unpinReplica(opts: { target: string; stateDir?: string; trees?: number; lockWaitMs?: number }): Promise<{ wasPinned: number | null }> {
  const layout = new ReplicaLayout(opts.target, opts.stateDir)
  const lock = await acquireLock(layout.lock, `replica ${opts.target}`, { waitMs: opts.lockWaitMs ?? 0 })
  try {
    const state = await loadState(layout.stateFile, slotNames(opts.trees ?? TREES.default))
    if (!state) throw new SnapshotError(`${opts.target} is not a replica yet`)
    const was = state.pinned?.id ?? null
    state.pinned = null
    await saveState(layout.stateFile, state)
    return { wasPinned: was }
  } finally {
    lock.release()
  }
}
