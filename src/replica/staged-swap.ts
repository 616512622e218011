import { HookFailedError, HookVetoError, SnapshotError } from '../core/errors.js'
import { crashPoint } from '../fs/crash-points.js'
import { swapSymlink } from '../fs/durable.js'
import type { ReplicaLayout } from './replica-layout.js'
import { saveState, type ReplicaState } from './replica-state.js'
import { runHook } from './swap-hooks.js'

export interface SwapHooks {
  readonly preSwap?: string
  readonly postSwap?: string
  readonly timeoutMs?: number
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
