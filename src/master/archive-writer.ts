import { randomUUID } from 'node:crypto'
import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { TarPacker, type StreamedBody } from '../archive/tar-pack.js'
import { SnapshotError } from '../core/errors.js'
import { encodeDeletionLine, encodeEntryLine, encodeHeaderLine, MANIFEST_FORMAT, type ManifestHeader } from '../core/manifest.js'
import type { ArchivePair } from '../core/snapshot-record.js'
import { mtimeSeconds } from '../core/mtime.js'
import type { TreeEntry } from '../core/tree-entry.js'
import { writeCompressedObject } from '../store/object-writer.js'

/**
 * Writes one archive and its manifest into the store's objects/, in one pass over the entries:
 * each entry goes into the tar stream as it comes, and its manifest line into a spool file, so
 * memory stays flat however many entries there are. The manifest (header, deletions, then the
 * spooled entries) is written after the archive, when its counts are known.
 */

export interface ArchiveSink {
  /** Adds an entry; a file's `data` must hash to its sha256 (the caller checked, or its stream checks). */
  add(entry: TreeEntry, data?: Buffer | StreamedBody): Promise<void>
  /** A path this archive deletes (a delta's), in any order: sorted when the manifest is written. */
  deleted(path: string): void
}

const SPOOL_FLUSH = 1 << 20

export async function writeArchivePair(
  objectsDir: string,
  header: Omit<ManifestHeader, 'entries' | 'deleted' | 'manifest'>,
  fill: (sink: ArchiveSink) => Promise<void>,
): Promise<ArchivePair> {
  const spoolPath = join(objectsDir, `.manifest-spool.${randomUUID()}.tmp`)
  const spool = openSync(spoolPath, 'wx', 0o600)
  let spoolOpen = true
  try {
    const deleted: string[] = []
    let entries = 0
    // Each line is encoded into this buffer as it comes (UTF-8, as writeSync writes a string): lines
    // held as strings until a flush outlived two scavenges and were promoted, ~30 MB of old-space
    // garbage for an hour of 150,000 files at 1M (BENCHMARKS.md, "Delta build memory").
    const spoolBuf = Buffer.allocUnsafe(SPOOL_FLUSH)
    let pending = 0
    let lastPath: string | null = null
    const flushSpool = (): void => {
      for (let done = 0; done < pending; ) done += writeSync(spool, spoolBuf, done, pending - done)
      pending = 0
    }
    const spoolLine = (line: string): void => {
      const most = 3 * line.length // UTF-8 bytes of a string of this many UTF-16 units, at most
      if (pending + most > SPOOL_FLUSH) flushSpool()
      if (most > SPOOL_FLUSH) writeSync(spool, line)
      else pending += spoolBuf.write(line, pending, 'utf8')
    }
    const { ref: archive, result: tarBytes } = await writeCompressedObject(objectsDir, 'tar.zst', async (write) => {
      const packer = new TarPacker(write)
      await fill({
        async add(entry, data) {
          if (lastPath !== null && !(entry.path > lastPath)) throw new SnapshotError(`internal: archive entries out of order at ${entry.path}`)
          lastPath = entry.path
          const mtimeSec = mtimeSeconds(entry.mtime)
          if (entry.type === 'd') await packer.addDir(entry.path, entry.mode, mtimeSec)
          else if (entry.type === 'l') await packer.addLink(entry.path, entry.target, mtimeSec)
          else await packer.addFile(entry.path, entry.mode, mtimeSec, data!)
          spoolLine(encodeEntryLine(entry))
          entries++
        },
        deleted(path) {
          deleted.push(path)
        },
      })
      return packer.finish()
    })
    flushSpool()
    closeSync(spool)
    spoolOpen = false
    deleted.sort().reverse() // descending: children before their parents
    const { ref: manifest } = await writeCompressedObject(objectsDir, 'manifest.zst', async (write) => {
      await write(Buffer.from(encodeHeaderLine({ manifest: MANIFEST_FORMAT, ...header, entries, deleted: deleted.length })))
      for (let i = 0; i < deleted.length; i += 8192) {
        await write(Buffer.from(deleted.slice(i, i + 8192).map(encodeDeletionLine).join('')))
      }
      // Read back through the spool's buffer (write is done with a chunk when it settles): a
      // stream's fresh 1 MiB chunks were ~9 MB of garbage at the peak of an hour at 1M.
      const back = openSync(spoolPath, 'r')
      try {
        for (let n; (n = readSync(back, spoolBuf, 0, spoolBuf.length, null)) > 0; ) await write(spoolBuf.subarray(0, n))
      } finally {
        closeSync(back)
      }
    })
    return { archive: { ...archive, tarBytes }, manifest, entries, deleted: deleted.length }
  } finally {
    if (spoolOpen) closeSync(spool)
    rmSync(spoolPath, { force: true })
  }
}

export function byPathAscending(a: { path: string }, b: { path: string }): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0
}
