import { displayPath } from './byte-path.js'
import type { Mtime } from './mtime.js'

/**
 * The unit everything is made of: one entry of a tree. Paths are relative, '/'-separated byte
 * strings (byte-path.ts), never empty, never '.' or '..' segments (see tree-path.ts); link targets
 * are byte strings too, carried verbatim. Every entry carries its modification time.
 */
export type EntryType = 'f' | 'd' | 'l'

/**
 * The mode bits a snapshot carries: permissions and sticky. Setuid and setgid are dropped on the
 * master and refused on replicas: a pull often runs as root, and an archive must not be able to
 * plant a setuid-root program.
 */
export const CARRIED_MODE_BITS = 0o1777

/**
 * A regular file as a manifest names it. Its bytes travel only in the archive, whose length and
 * sha256 the signed record names: a per-file hash in the manifest would vouch for nothing more.
 */
export interface ManifestFileEntry {
  readonly type: 'f'
  readonly path: string
  readonly mode: number // permission bits and sticky (CARRIED_MODE_BITS): never setuid or setgid
  readonly size: number
  readonly mtime: Mtime
}
/** A regular file with the hash of its bytes, as the master's index and the tree digest need it. */
export interface FileEntry extends ManifestFileEntry {
  readonly sha256: string // hex
}
export interface DirEntry {
  readonly type: 'd'
  readonly path: string
  readonly mode: number
  readonly mtime: Mtime
}
export interface LinkEntry {
  readonly type: 'l'
  readonly path: string
  readonly target: string
  readonly mtime: Mtime
}

/**
 * The tree's root directory: its mode and mtime are the tree's own (a private root stays private
 * on replicas), carried in every manifest's header and in the record.
 */
export interface RootMeta {
  readonly mode: number
  readonly mtime: Mtime
}
export type TreeEntry = FileEntry | DirEntry | LinkEntry
/** An entry as a manifest carries it: a file without its content hash. Every TreeEntry is one. */
export type ManifestEntry = ManifestFileEntry | DirEntry | LinkEntry

/** What a file entry costs inside a tar stream, headers excluded: data padded to 512-byte blocks. */
export function tarDataBlocks(size: number): number {
  return Math.ceil(size / 512) * 512
}

export function describeEntry(e: ManifestEntry): string {
  switch (e.type) {
    case 'f':
      return `file ${displayPath(e.path)} (${e.size} bytes, mode ${e.mode.toString(8)})`
    case 'd':
      return `directory ${displayPath(e.path)}`
    case 'l':
      return `symlink ${displayPath(e.path)} -> ${displayPath(e.target)}`
  }
}
