import type { ReplicaState, SlotState } from './replica-state.js'

/**
 * Which tree a replica writes into. Three roles: the live tree; the rollback tree (the newest
 * snapshot older than the live one, kept for an instant `snapshot rollback`); and, with three or
 * more trees, a spare that is brought up to the live snapshot right after each swap, so that the
 * next pull only has to apply the next hour's change before it can swap. With two trees there is
 * no spare: the next snapshot is built in the rollback tree, replaying two hours.
 */

/** The snapshot a tree holds, or starts from when dirty; null for an empty tree. */
export function slotBase(st: SlotState): number | null {
  return st.status === 'ready' ? st.id : st.status === 'dirty' ? st.base : null
}

function nonLive(state: ReplicaState, names: readonly string[] = Object.keys(state.slots)): string[] {
  return names.filter((s) => s !== state.live?.slot && state.slots[s] !== undefined)
}

/** The tree holding the newest snapshot older than the live one: what an instant rollback uses. */
export function rollbackSlot(state: ReplicaState): string | null {
  const live = state.live
  if (!live) return null
  let best: string | null = null
  for (const s of nonLive(state)) {
    const st = state.slots[s]!
    if (st.status !== 'ready' || st.id >= live.id) continue
    if (best === null || st.id > (state.slots[best] as { id: number }).id) best = s
  }
  return best
}

/**
 * The tree to build the next snapshot in: never the live one, and not the rollback tree while
 * another is left. Among the rest, the one closest to the latest (a caught-up spare), since the
 * cost of a pull is the change it replays; an empty tree only when no other is left.
 */
export function chooseSlot(state: ReplicaState): string {
  const candidates = nonLive(state)
  const keep = candidates.length > 1 ? rollbackSlot(state) : null
  const usable = candidates.filter((s) => s !== keep)
  const used = usable.filter((s) => slotBase(state.slots[s]!) !== null)
  if (used.length === 0) return usable[0]!
  return used.reduce((best, s) => (slotBase(state.slots[s]!)! > slotBase(state.slots[best]!)! ? s : best))
}

/**
 * The spare to bring up to the live snapshot after a swap, or null: none with fewer than three
 * trees, none when a tree already holds the live snapshot (or a newer staged one). The oldest
 * tree goes first (an empty one counts as oldest), so the others stay for rollback.
 */
export function catchUpSlot(state: ReplicaState, names: readonly string[]): string | null {
  const live = state.live
  if (!live || names.length < 3) return null
  const keep = rollbackSlot(state)
  const candidates = nonLive(state, names).filter((s) => s !== keep)
  if (candidates.length === 0) return null
  if (candidates.some((s) => { const st = state.slots[s]!; return st.status === 'ready' && st.id >= live.id })) return null
  const rank = (s: string): number => slotBase(state.slots[s]!) ?? -1
  return candidates.reduce((oldest, s) => (rank(s) < rank(oldest) ? s : oldest))
}
