import { readlink } from 'node:fs/promises'
import { parentCreated } from '../core/pointer.js'
import { MirroredSource, type MirrorReport } from '../store/mirrored-source.js'
import type { StoreClient } from '../store/store-client.js'
import { loadCachedRecord } from './record-cache.js'
import { ReplicaLayout, slotNames, TREES } from './replica-layout.js'
import { loadState, type ReplicaState } from './replica-state.js'

/**
 * `snapshot status --target PATH`: what the replica serves and since when, what is staged, whether
 * it is pinned, how the last pull ended, and (when the store answers) how far behind it is.
 * Reads only; takes no lock.
 */
export interface ReplicaStatus {
  readonly target: string
  readonly live: { id: number; created: string | null; ageSeconds: number | null; since: string; tree: string } | null
  readonly linkOk: boolean
  readonly staged: { id: number; tree: string } | null
  readonly pinned: ReplicaState['pinned']
  readonly lastPull: ReplicaState['lastPull']
  readonly trees: ReplicaState['slots']
  readonly store: { source: string; latestId: number; created: string; latestParentCreated?: string; lag: number } | { source: string; error: string; code: string } | null
  /** With several mirrors: what each answered, and which were skipped (down, stale, invalid). */
  readonly mirrors: readonly MirrorReport[] | null
}

export async function replicaStatus(opts: { target: string; stateDir?: string; trees?: number; store?: StoreClient; now?: () => Date }): Promise<ReplicaStatus | null> {
  const layout = new ReplicaLayout(opts.target, opts.stateDir)
  const state = await loadState(layout.stateFile, slotNames(opts.trees ?? TREES.default))
  if (!state) return null
  const now = (opts.now ?? (() => new Date()))().getTime()
  let live: ReplicaStatus['live'] = null
  let linkOk = false
  if (state.live) {
    const record = await loadCachedRecord(layout, state.live.id)
    const created = record?.created ?? null
    live = { id: state.live.id, created, ageSeconds: created ? Math.round((now - Date.parse(created)) / 1000) : null, since: state.live.since, tree: layout.tree(state.live.slot) }
    linkOk = (await readlink(opts.target).catch(() => null)) === layout.linkValue(state.live.slot)
  }
  let store: ReplicaStatus['store'] = null
  if (opts.store) {
    try {
      const pointer = await opts.store.pointer()
      store = { source: opts.store.description, latestId: pointer.latest.id, created: pointer.latest.created, ...parentCreated(pointer), lag: pointer.latest.id - (state.live?.id ?? 0) }
    } catch (err) {
      const e = err as { message?: string; code?: string }
      store = { source: opts.store.description, error: e.message ?? String(err), code: e.code ?? 'ERR_UNKNOWN' }
    }
  }
  return {
    target: opts.target,
    live,
    linkOk,
    staged: state.staged ? { id: state.staged.id, tree: layout.tree(state.staged.slot) } : null,
    pinned: state.pinned,
    lastPull: state.lastPull,
    trees: state.slots,
    store,
    mirrors: opts.store?.source instanceof MirroredSource && store ? opts.store.source.reports : null,
  }
}
