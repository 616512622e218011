import { basename, dirname, join, relative } from 'node:path'

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
export const TREES = { min: 2, max: 26, default: 2 } as const

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
