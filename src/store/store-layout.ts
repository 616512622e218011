import { join } from 'node:path'

/**
 * Where things live in a store. Everything a replica reads is a static file: `latest.json` (the
 * only file ever replaced), `snapshots/<id>.json` and `objects/<sha256>.<ext>` (written once).
 * The master's private state sits under `.state/`, which `snapshot serve` never serves.
 */
export const LATEST = 'latest.json'
/** A relay's lock, held by `snapshot mirror` while it copies into the directory (a dot-file: never served). */
export const MIRROR_LOCK = '.mirror.lock'
/** Names the `snapshot mirror --watch` following the origin into the directory, while it runs (a dot-file). */
export const MIRROR_WATCH = '.mirror-watch'
export const recordRelPath = (id: number): string => `snapshots/${id}.json`
export const objectRelPath = (sha256: string, ext: string): string => `objects/${sha256}.${ext}`

export class StoreLayout {
  constructor(readonly root: string) {}
  get latest(): string {
    return join(this.root, LATEST)
  }
  get snapshotsDir(): string {
    return join(this.root, 'snapshots')
  }
  get objectsDir(): string {
    return join(this.root, 'objects')
  }
  get stateDir(): string {
    return join(this.root, '.state')
  }
  record(id: number): string {
    return join(this.root, recordRelPath(id))
  }
  object(relPath: string): string {
    return join(this.root, relPath)
  }
  /** The master's scan index for snapshot `id`: stat signatures and hashes of the whole tree. */
  index(id: number): string {
    return join(this.stateDir, `index-${id}.bin`)
  }
  get lock(): string {
    return join(this.stateDir, 'build.lock')
  }
}
