import type { ReplicaState, SlotState } from './replica-state.js'

/**
 * Which tree a replica writes into. Three roles: the live tree; the rollback tree (the newest
 * snapshot older than the live one, kept for an instant `snapshot rollback`); and a spare: any
 * other tree, brought up to the live snapshot right after a swap, so that the next pull only has
 * to apply the next hour's change before it can swap.
 *
 * With three or more trees there is always a spare. With two there is one only until a replica
 * has a rollback tree: right after its first swap the second tree is empty, and filling it then,
 * off the critical path, is what lets the second pull apply one hour onto a tree one hour behind
 * instead of writing the whole tree again before it can swap. From the second swap on, the tree
 * that is not live is the previous live one: it is kept for rollback, never caught up, and the
 * next snapshot is built in it, replaying two hours (two trees leave nowhere else to build).
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
 * The spare to bring up to the live snapshot after a swap, or null: never the live tree nor the
 * rollback tree (so with two trees only while there is no rollback tree yet: a new replica's
 * second tree), none when a tree already holds the live snapshot (or a newer staged one). The
 * oldest tree goes first (an empty one counts as oldest), so the others stay for rollback.
 */
export function catchUpSlot(state: ReplicaState, names: readonly string[]): string | null {
  const live = state.live
  if (!live) return null
  const keep = rollbackSlot(state)
  const candidates = nonLive(state, names).filter((s) => s !== keep)
  if (candidates.length === 0) return null
  if (candidates.some((s) => { const st = state.slots[s]!; return st.status === 'ready' && st.id >= live.id })) return null
  const rank = (s: string): number => slotBase(state.slots[s]!) ?? -1
  return candidates.reduce((oldest, s) => (rank(s) < rank(oldest) ? s : oldest))
}
