import { lstat, readlink } from 'node:fs/promises'
import { basename, dirname, join, relative } from 'node:path'
import { UsageError } from '../core/errors.js'

/**
 * A replica is a symlink (the target PATH the operator serves) to one of several trees kept in a
 * state directory beside it. The trees are recycled: the next snapshot is built in a tree that is
 * not live, by applying only what changed since that tree's snapshot.
 *
 *   PATH -> .NAME.snapshot/trees/a
 *   .NAME.snapshot/state.json      which tree is live, staged, pinned; the last pull
 *   .NAME.snapshot/trees/{a,b,..}  the trees
 *   .NAME.snapshot/objects/        downloaded objects, kept while a tree may need them
 *   .NAME.snapshot/records/        verified snapshot records
 *   .NAME.snapshot/trash/          trees being removed
 */

/** How many trees a replica may keep (`--trees`): the live one and the previous at least; a-z at most. */
export const TREES = { min: 2, max: 26, default: 3 } as const

export class ReplicaLayout {
  readonly target: string
  readonly stateDir: string

  constructor(target: string, stateDir?: string) {
    this.target = target
    this.stateDir = stateDir ?? join(dirname(target), `.${basename(target)}.snapshot`)
  }
  get stateFile(): string {
    return join(this.stateDir, 'state.json')
  }
  get treesDir(): string {
    return join(this.stateDir, 'trees')
  }
  get objectsDir(): string {
    return join(this.stateDir, 'objects')
  }
  get recordsDir(): string {
    return join(this.stateDir, 'records')
  }
  get trashDir(): string {
    return join(this.stateDir, 'trash')
  }
  get lock(): string {
    return join(this.stateDir, 'lock')
  }
  tree(slot: string): string {
    return join(this.treesDir, slot)
  }
  /** What the PATH symlink holds: relative, so the pair can move together. */
  linkValue(slot: string): string {
    return relative(dirname(this.target), this.tree(slot))
  }
  object(relPath: string): string {
    return join(this.stateDir, relPath)
  }
  record(id: number): string {
    return join(this.recordsDir, `${id}.json`)
  }
}

/** The trees' names: a, b, c... (`--trees`). */
export function slotNames(trees: number): string[] {
  if (!Number.isInteger(trees) || trees < TREES.min || trees > TREES.max) throw new UsageError(`--trees must be a whole number from ${TREES.min} to ${TREES.max}`)
  return Array.from({ length: trees }, (_, i) => String.fromCharCode(97 + i))
}

/** PATH must be absent or a symlink into our trees: never replace an operator's own directory. */
export async function checkTarget(layout: ReplicaLayout): Promise<void> {
  const st = await lstat(layout.target).catch(() => null)
  if (!st) return
  if (!st.isSymbolicLink()) {
    throw new UsageError(`--target ${layout.target} exists and is not a symlink made by snapshot; move it aside or choose another path`)
  }
  const value = await readlink(layout.target)
  if (!slotNames(TREES.max).some((s) => value === layout.linkValue(s))) {
    throw new UsageError(`--target ${layout.target} is a symlink to ${value}, which snapshot did not make; remove it or choose another path`)
  }
}
