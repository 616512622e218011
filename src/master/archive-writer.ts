import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { TarPacker } from '../archive/tar-pack.js'
import { SnapshotError } from '../core/errors.js'
import { encodeDeletionLine, encodeEntryLine, encodeHeaderLine, type ManifestHeader } from '../core/manifest.js'
import type { ArchivePair } from '../core/snapshot-record.js'
import type { TreeEntry } from '../core/tree-entry.js'
import { readFileStable } from '../fs/stable-read.js'
import { writeCompressedObject } from '../store/object-writer.js'

/**
 * Writes one archive and its manifest into the store's objects/. Entries go in ascending path
 * order (parents before children, the order replicas check), deletions in descending order.
 * File bytes come from `contents` when the scan kept them, or are read again; either way they
 * must hash to the entry's sha256, so the manifest and the archive always agree.
 */
export class SourceChangedError extends SnapshotError {
  override readonly code = 'ERR_SOURCE_CHANGED'
}

export async function writeArchivePair(input: {
  objectsDir: string
  source: string
  header: Omit<ManifestHeader, 'entries' | 'deleted' | 'manifest'>
  entries: readonly TreeEntry[] // sorted ascending
  deleted: readonly string[] // sorted descending
  contents: ReadonlyMap<string, Buffer>
  mtime: Date
}): Promise<ArchivePair> {
  const { ref: archive, result: tarBytes } = await writeCompressedObject(input.objectsDir, 'tar.zst', async (write) => {
    const packer = new TarPacker(write, input.mtime)
    for (const e of input.entries) {
      if (e.type === 'd') await packer.addDir(e.path, e.mode)
      else if (e.type === 'l') await packer.addLink(e.path, e.target)
      else {
        const data = input.contents.get(e.path) ?? readFileStable(join(input.source, e.path)).data
        if (data.length !== e.size || createHash('sha256').update(data).digest('hex') !== e.sha256) {
          throw new SourceChangedError(`${e.path} changed while the snapshot was being written`)
        }
        await packer.addFile(e.path, e.mode, data)
      }
    }
    return packer.finish()
  })
  const { ref: manifest } = await writeCompressedObject(input.objectsDir, 'manifest.zst', async (write) => {
    const lines: string[] = [encodeHeaderLine({ manifest: 'playlist-snapshot-manifest/1', ...input.header, entries: input.entries.length, deleted: input.deleted.length })]
    let pending = 0
    const flushLines = async (): Promise<void> => {
      await write(Buffer.from(lines.join('')))
      lines.length = 0
      pending = 0
    }
    for (const p of input.deleted) {
      lines.push(encodeDeletionLine(p))
      if (++pending >= 8192) await flushLines()
    }
    for (const e of input.entries) {
      lines.push(encodeEntryLine(e))
      if (++pending >= 8192) await flushLines()
    }
    await flushLines()
  })
  return { archive: { ...archive, tarBytes }, manifest, entries: input.entries.length, deleted: input.deleted.length }
}

export function byPathAscending(a: { path: string }, b: { path: string }): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0
}
