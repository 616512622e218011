import type { StreamedBody } from '../archive/tar-pack.js'
import { SourceChangedError } from '../core/errors.js'
import type { ArchivePair } from '../core/snapshot-record.js'
import { TreeDigest } from '../core/tree-digest.js'
import type { RootMeta } from '../core/tree-entry.js'
import { writeArchivePair } from './archive-writer.js'
import { sha256Hex } from '../core/sha256.js'
import { readSourceFile, type MetadataScan, type WholeTreeScan } from './build-scan.js'
import { entryFromIndex, sigOf } from './index-row.js'
import type { EntryList } from './master-index.js'
import { pathOrder } from './path-order.js'
import { ReadAhead, type ReadJob } from './read-ahead.js'
import type { SourceFiles, SourceReader } from './source-reader.js'

/**
 * The whole tree in one archive, in path order, while the index holds the entries in scan order
 * (path-order.ts). Each entry's row is decoded when its turn comes, so a million entries cost
 * two arrays of numbers, not an object or a string each.
 */

/**
 * A first build's archive: every file is read here, hashed into its row and into the tree digest.
 * A file gone since the scan is left out, with a warning.
 */
export async function writeFirstFull(objectsDir: string, id: number, root: RootMeta, scan: WholeTreeScan, reader: SourceReader, readerThreads?: number): Promise<{ pair: ArchivePair; digest: TreeDigest }> {
  const { index } = scan
  const digest = new TreeDigest()
  digest.addRoot(root)
  const order = pathOrder(index)
  const ahead = readAhead(reader, readerThreads, order, index, (n) => (index.type(n) === 'f' ? index.sig(n) : null))
  const pair = await writeArchivePair(objectsDir, { id, kind: 'full', base: null, root }, async (sink) => {
    for (const n of order) {
      if (index.type(n) !== 'f') {
        const entry = index.entry(n)
        digest.add(entry)
        await sink.add(entry)
        continue
      }
      const path = index.path(n)
      await ahead.arrive(path)
      const read = readSourceFile(ahead, path, index.sig(n), scan)
      if (!read) {
        index.dropFile(n)
        continue
      }
      index.fillFile(n, read.entry.sha256, read.indexSig)
      digest.add(read.entry)
      await sink.add(read.entry, read.data)
    }
  }).finally(() => ahead.close())
  return { pair, digest }
}

/**
 * A full archive after a delta: the index knows every file's hash; each file is read again and
 * must still hash to its entry, or the tree moved under us (SourceChangedError). The delta's own
 * files are read again too: keeping their bytes would cost the memory of every delta build for
 * the sake of the rare one followed by a full.
 */
export async function writeFullFromIndex(objectsDir: string, id: number, root: RootMeta, scan: MetadataScan, reader: SourceReader, readerThreads?: number): Promise<ArchivePair> {
  const list = scan.index.entryList()
  const order = pathOrder(list)
  const ahead = readAhead(reader, readerThreads, order, list, (n) => {
    const sig = sigOf(list.value(n))
    return sig.startsWith('f ') ? sig : null
  })
  return writeArchivePair(objectsDir, { id, kind: 'full', base: null, root }, async (sink) => {
    for (const n of order) {
      const path = list.path(n)
      const value = list.value(n)
      const entry = entryFromIndex(path, value)
      if (entry.type !== 'f') {
        await sink.add(entry)
        continue
      }
      await ahead.arrive(path)
      const read = readExpected(ahead, path, value)
      if (read.size !== entry.size || read.sha256 !== entry.sha256) {
        throw new SourceChangedError(`${path} changed while the snapshot was being written`)
      }
      await sink.add(entry, read.data)
    }
  }).finally(() => ahead.close())
}

/** The files of `order` that `sigOfFile` says are files, read ahead in that order. */
function readAhead(reader: SourceReader, threads: number | undefined, order: Uint32Array, list: Pick<EntryList, 'path'>, sigOfFile: (n: number) => string | null): ReadAhead {
  let i = 0
  const next = (): ReadJob | null => {
    while (i < order.length) {
      const n = order[i++]!
      const sig = sigOfFile(n)
      if (sig !== null) return { path: list.path(n), sig }
    }
    return null
  }
  return new ReadAhead(reader, next, threads === undefined ? undefined : { threads })
}

/** Reads a file the index already describes, using its stat signature as the scan's. */
function readExpected(reader: SourceFiles, path: string, value: string): { data: Buffer | StreamedBody; size: number; sha256: string } {
  // A racy entry's signature never matches a stat: it gets the slow, stable read.
  const read = reader.read(path, sigOf(value))
  if ('gone' in read) throw new SourceChangedError(`${path} changed while the snapshot was being written (${read.gone})`)
  if ('large' in read) return { data: read.large, size: read.large.size, sha256: read.large.sha256 }
  return { data: read.data, size: read.data.length, sha256: read.sha256 ?? sha256Hex(read.data) }
}
