import { decompressFile } from '../archive/decompress.js'
import { pairOf, type PlanStep } from '../core/chain-plan.js'
import { UnsafeArchiveError } from '../core/errors.js'
import { MAX_PATH_BYTES } from '../core/tree-path.js'
import { ManifestCursor } from './manifest-cursor.js'

/**
 * One step of a plan (a full archive, or a delta, with its manifest), opened for restoring: the
 * manifest streamed from its file (never held whole: manifest-cursor.ts) within the bound its
 * signed counts set, its header checked against the
 * signed record (objects of other snapshots cannot be mixed in), and the archive as a stream of
 * tar bytes, bounded by its signed size. The same for a replica's pull, a fleet rollback's
 * rebuild and `verify --target`'s replay; where the two files come from (a download, the
 * replica's cache, the store's own directory) and what is done with the step are the caller's.
 * The result spreads into applyArchive's input, which closes the manifest's stream.
 */
export interface OpenedStep {
  readonly manifest: ManifestCursor
  readonly tarChunks: AsyncIterable<Buffer>
  readonly tarBytes: number
  /** A full archive makes the whole tree: it must add up to the signed tree digest. */
  readonly expectDigest?: string
}

/** The two files of a step, each already checked against its signed length and sha256. */
export interface StepFiles {
  readonly manifest: string
  readonly archive: string
}

export async function openStep(step: PlanStep, files: StepFiles): Promise<OpenedStep> {
  const { record, use } = step
  const pair = pairOf(step)
  const maxManifest = (pair.entries + pair.deleted + 1) * (2 * MAX_PATH_BYTES + 256)
  const manifest = await ManifestCursor.open(() => decompressFile(files.manifest), maxManifest, `manifest of snapshot ${record.id}`)
  const h = manifest.header
  const base = use === 'full' ? null : record.parent
  if (h.id !== record.id || h.kind !== use || h.base !== base || h.entries !== pair.entries || h.deleted !== pair.deleted) {
    await manifest.close()
    throw new UnsafeArchiveError(`the ${use} manifest of snapshot ${record.id} does not match its signed record (mix-and-match of objects?)`)
  }
  return {
    manifest,
    tarChunks: decompressFile(files.archive, pair.archive.tarBytes, `the archive of snapshot ${record.id}`),
    tarBytes: pair.archive.tarBytes,
    ...(use === 'full' ? { expectDigest: record.treeDigest } : {}),
  }
}
