/**
 * The unit everything is made of: one entry of a tree, as a manifest names it. Paths are relative,
 * POSIX, '/'-separated, never empty, never '.' or '..' segments (see tree-path.ts).
 */
export type EntryType = 'f' | 'd' | 'l'

/**
 * The mode bits a snapshot carries: permissions and sticky. Setuid and setgid are dropped on the
 * master and refused on replicas: a pull often runs as root, and an archive must not be able to
 * plant a setuid-root program.
 */
export const CARRIED_MODE_BITS = 0o1777

export interface FileEntry {
  readonly type: 'f'
  readonly path: string
  readonly mode: number // permission bits and sticky (CARRIED_MODE_BITS): never setuid or setgid
  readonly size: number
  readonly sha256: string // hex
}
export interface DirEntry {
  readonly type: 'd'
  readonly path: string
  readonly mode: number
}
export interface LinkEntry {
  readonly type: 'l'
  readonly path: string
  readonly target: string
}
export type TreeEntry = FileEntry | DirEntry | LinkEntry

/** What a file entry costs inside a tar stream, headers excluded: data padded to 512-byte blocks. */
export function tarDataBlocks(size: number): number {
  return Math.ceil(size / 512) * 512
}

export function describeEntry(e: TreeEntry): string {
  switch (e.type) {
    case 'f':
      return `file ${e.path} (${e.size} bytes, mode ${e.mode.toString(8)})`
    case 'd':
      return `directory ${e.path}`
    case 'l':
      return `symlink ${e.path} -> ${e.target}`
  }
}
