import { existsSync } from 'node:fs'
import { SnapshotError } from '../core/errors.js'
import { acquireLock } from '../fs/lock-file.js'
import { ReplicaLayout, slotNames } from '../replica/replica-layout.js'
import { swapToStaged } from '../replica/staged-swap.js'
import { loadState } from '../replica/replica-state.js'
import type { Output } from './output.js'

/** Makes the snapshot that `pull` (without --swap) staged go live. */
export async function swapCommand(opts: { target: string; state?: string; trees: number; wait: number }, out: Output): Promise<void> {
  const layout = new ReplicaLayout(opts.target, opts.state)
  if (!existsSync(layout.stateDir)) throw new SnapshotError(`${opts.target} is not a replica yet: run \`snapshot pull\` first`)
  const lock = await acquireLock(layout.lock, `replica ${opts.target}`, { waitMs: opts.wait * 1000 })
  try {
    const state = await loadState(layout.stateFile, slotNames(opts.trees))
    if (!state) throw new SnapshotError(`${opts.target} is not a replica yet: run \`snapshot pull\` first`)
    const staged = state.staged
    await swapToStaged(layout, state, (l) => out.log(l))
    out.result({ action: 'swapped', id: staged?.id }, [`swapped: ${opts.target} serves snapshot ${staged?.id}`])
  } finally {
    lock.release()
  }
}
