import type { TarEntryHeader, TarReader } from '../archive/tar-reader.js'
import { UnsafeArchiveError } from '../core/errors.js'
import type { ManifestEntry } from '../core/tree-entry.js'
import { linkTargetProblem, pathProblem } from '../core/tree-path.js'
import type { ManifestCursor } from './manifest-cursor.js'
import { quotePath } from '../core/byte-path.js'

/** Lines read into the manifest's window at once when it runs low: a few decoder chunks' worth, no more. */
const READ_AHEAD = 512

/**
 * Walks an archive and its manifest side by side: the manifest's deletions first, then each tar
 * entry must be the manifest's next entry, with the same path, type, mode, size and link target.
 * What the manifest does not say (a file's bytes) only the archive holds, vouched for by the
 * sha256 of the whole archive in the signed record. Times come from the manifest (exact), not the
 * tar header (whole seconds). Used by the apply and by verify --target's
 * replay, so both refuse exactly the same archives.
 */
export class ManifestLockstep {
  private next: ManifestEntry | null = null
  private deletionsDone = false

  constructor(private readonly manifest: ManifestCursor) {}

  /** Calls `onDeleted` for each deleted path, in the manifest's (descending) order, waiting for it when it returns a promise. */
  async deletions(onDeleted: (path: string) => Promise<void> | void): Promise<void> {
    if (this.deletionsDone) throw new Error('internal: deletions walked twice')
    this.deletionsDone = true
    const m = this.manifest
    for (;;) {
      if (!m.ready(1)) await m.fill(READ_AHEAD)
      const line = m.next()
      if (line === null) break
      if (line.kind === 'entry') {
        this.next = line.entry
        return
      }
      const removing = onDeleted(line.path)
      if (removing) await removing
    }
  }

  /** The manifest entry archive entry `h` stands for; refuses any disagreement between the two. */
  match(h: TarEntryHeader): ManifestEntry {
    const expected = this.take()
    if (!expected || expected.path !== h.path) {
      // The manifest's paths are checked, and the archive's must equal them: a mismatch is refused
      // either way. Say why an unsafe one is unsafe, rather than only that it was unexpected.
      const problem = pathProblem(h.path)
      if (problem) throw new UnsafeArchiveError(`archive entry ${quotePath(h.path)} is unsafe (${problem})`)
      if (!expected) throw new UnsafeArchiveError(`archive entry ${quotePath(h.path)} is not named by the manifest`)
      throw new UnsafeArchiveError(`archive entry ${quotePath(h.path)} is not the one the manifest names next (${quotePath(expected.path)})`)
    }
    if (expected.type !== h.type) throw new UnsafeArchiveError(`${quotePath(h.path)}: the archive and the manifest disagree on its type`)
    if (expected.type === 'l') {
      if (h.linkpath !== expected.target) {
        const problem = linkTargetProblem(h.linkpath)
        throw new UnsafeArchiveError(`${quotePath(h.path)}: the archive's link target differs from the manifest's${problem ? ` and is unsafe (${problem})` : ''}`)
      }
      return expected
    }
    if (h.mode !== expected.mode) throw new UnsafeArchiveError(`${quotePath(h.path)}: mode ${h.mode.toString(8)} in the archive, ${expected.mode.toString(8)} in the manifest`)
    if (expected.type === 'f' && h.size !== expected.size) throw new UnsafeArchiveError(`${quotePath(h.path)}: ${h.size} bytes in the archive, ${expected.size} in the manifest`)
    return expected
  }

  /**
   * Before the tar reader is given `bytes` more of the archive: every entry in them takes one
   * manifest line, and each takes a 512-byte header block, the first maybe begun in the chunk
   * before; so floor(bytes / 512) + 1 lines are the most that the chunk can ask for.
   */
  before(bytes: number): Promise<void> | undefined {
    const need = Math.floor(bytes / 512) + 1
    return this.manifest.ready(need) ? undefined : this.manifest.fill(Math.max(need, READ_AHEAD))
  }

  /** After the last archive entry: the manifest must have nothing left. */
  async finish(): Promise<void> {
    if (!this.next && !this.manifest.ready(1)) await this.manifest.fill(1)
    const rest = this.take()
    if (rest) throw new UnsafeArchiveError(`manifest entry ${quotePath(rest.path)} is missing from the archive`)
  }

  private take(): ManifestEntry | null {
    if (!this.deletionsDone) throw new Error('internal: archive entries before the deletions')
    if (this.next) {
      const e = this.next
      this.next = null
      return e
    }
    const line = this.manifest.next()
    if (line === null) return null
    if (line.kind === 'deleted') throw new UnsafeArchiveError(`manifest: deletion ${quotePath(line.path)} after the entries`)
    return line.entry
  }
}

/**
 * Feeds a tar stream to `reader`, holding it to exactly `tarBytes` (the signed record's figure):
 * more is a bomb, less is a truncation. The manifest's window is topped up before each chunk, for
 * the entries the chunk holds.
 */
export async function feedTar(reader: TarReader, chunks: AsyncIterable<Buffer>, tarBytes: number, lockstep: ManifestLockstep, room?: () => Promise<void> | null): Promise<void> {
  let seen = 0
  for await (const chunk of chunks) {
    seen += chunk.length
    if (seen > tarBytes) throw new UnsafeArchiveError(`the archive unpacks to more than the ${tarBytes} bytes it declares`)
    const filling = lockstep.before(chunk.length) // no promise to wait on while the window holds enough
    if (filling) await filling
    const writing = room?.() // the writer threads' backlog (file-writers.ts): null while they keep up
    if (writing) await writing
    reader.write(chunk)
  }
  if (seen !== tarBytes) throw new UnsafeArchiveError(`the archive unpacks to ${seen} bytes, it declares ${tarBytes}`)
  reader.close()
}
