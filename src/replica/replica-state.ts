import { readFile } from 'node:fs/promises'
import { SnapshotError } from '../core/errors.js'
import { writeFileAtomic } from '../fs/durable.js'

/** What a replica remembers between runs. Written atomically after every step that matters. */
export type SlotState =
  | { status: 'empty' }
  | { status: 'ready'; id: number; digest: string }
  /** Being changed: from `base` (null: from empty) towards `target`. Re-applying from base is safe. */
  | { status: 'dirty'; base: number | null; target: number }

export interface ReplicaState {
  format: 1
  /** The newest snapshot id ever verified here: a store offering less is refused (rollback attack). */
  highestSeen: number
  live: { slot: string; id: number; since: string } | null
  staged: { slot: string; id: number } | null
  slots: Record<string, SlotState>
  pinned: { id: number; since: string; reason: string } | null
  lastPull: { at: string; ok: boolean; id?: number; code?: string; error?: string } | null
  /** The store the last pull used (for status and verify). */
  source?: string
}

export function freshState(slotNames: readonly string[]): ReplicaState {
  const slots: Record<string, SlotState> = {}
  for (const s of slotNames) slots[s] = { status: 'empty' }
  return { format: 1, highestSeen: 0, live: null, staged: null, slots, pinned: null, lastPull: null }
}

export async function loadState(file: string, slotNames: readonly string[]): Promise<ReplicaState | null> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  let state: ReplicaState
  try {
    state = JSON.parse(text) as ReplicaState
  } catch (err) {
    throw new SnapshotError(`${file} is not valid JSON; move it aside to start this replica afresh`, { cause: err })
  }
  if (state.format !== 1) throw new SnapshotError(`${file}: unknown state format`)
  for (const s of slotNames) state.slots[s] ??= { status: 'empty' }
  return state
}

export async function saveState(file: string, state: ReplicaState): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(state, null, 2) + '\n')
}
