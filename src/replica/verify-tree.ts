import { createHash, type Hash } from 'node:crypto'
import { lstatSync, readdirSync, readFileSync, readlinkSync, type BigIntStats } from 'node:fs'
import { byteStringOf, bytesOf, displayPath, fsPath, type FsPath } from '../core/byte-path.js'
import { mtimeFromNs, mtimeMicros } from '../core/mtime.js'
import { TarReader } from '../archive/tar-reader.js'
import { pairOf } from '../core/chain-plan.js'
import { NoSnapshotError, SnapshotError } from '../core/errors.js'
import type { SnapshotRecord } from '../core/snapshot-record.js'
import { TreeDigest } from '../core/tree-digest.js'
import type { ManifestFileEntry, RootMeta, TreeEntry } from '../core/tree-entry.js'
import type { ObjectSource } from '../store/object-source.js'
import { walkBack, type StoreClient } from '../store/store-client.js'
import type { ManifestCursor } from '../restore/manifest-cursor.js'
import { feedTar, ManifestLockstep } from '../restore/manifest-lockstep.js'
import { openStep } from '../restore/open-step.js'
import { ensureObject } from './object-cache.js'
import { fetchRecord, loadCachedRecord } from './record-cache.js'
import { ReplicaLayout, slotNames, TREES } from './replica-layout.js'
import { loadState } from './replica-state.js'

/**
 * `snapshot verify --target PATH`: reads the whole live tree and compares it with its snapshot,
 * naming every path that differs. What the tree should hold is replayed from the archives (the
 * latest full and the deltas up to the live snapshot, each checked in lockstep against its
 * manifest, the deletions taken from the manifests), hashing each file's bytes on the way; the
 * result must add up to the signed tree digest. A whole-tree read by nature: run it when in doubt,
 * not every hour.
 */
export interface TreeProblem {
  /** A byte string (byte-path.ts); '' is the root. */
  readonly path: string
  readonly problem: string
}
export interface TreeVerifyResult {
  readonly id: number
  readonly checked: number
  readonly problems: readonly TreeProblem[]
}

const MAX_REPORTED = 10_000

export async function verifyLiveTree(opts: { target: string; stateDir?: string; trees?: number; store?: StoreClient; log?: (l: string) => void }): Promise<TreeVerifyResult> {
  const layout = new ReplicaLayout(opts.target, opts.stateDir)
  const state = await loadState(layout.stateFile, slotNames(opts.trees ?? TREES.default))
  if (!state?.live) throw new SnapshotError(`${opts.target} serves no snapshot yet`)
  const liveId = state.live.id
  const store = opts.store
  const getRecord = async (id: number): Promise<SnapshotRecord | undefined> =>
    (await loadCachedRecord(layout, id)) ?? (store ? await fetchRecord(store, layout, id) : undefined)
  const gone = (): NoSnapshotError => new NoSnapshotError(`the records needed to rebuild the tree of snapshot ${liveId} are gone${store ? '' : ' (give --from to fetch them from the store)'}`)

  // The chain back to a full archive: that full archive, then each delta forward.
  const live = await getRecord(liveId)
  if (!live) throw gone()
  const chain = [live, ...(await walkBack(live, (r) => !r.full, getRecord))].reverse()
  const oldest = chain[0]!
  if (!oldest.full) throw oldest.parent === null ? new NoSnapshotError(`snapshot ${oldest.id} has neither a full archive nor a parent`) : gone()
  const expected = new Map<string, TreeEntry>()
  let root: RootMeta | null = null
  for (const [i, r] of chain.entries()) {
    const step = { record: r, use: i === 0 ? ('full' as const) : ('delta' as const) }
    const pair = pairOf(step)
    const manifestFile = await fetchIfNeeded(layout, store?.source, pair.manifest, r.id)
    const archiveFile = await fetchIfNeeded(layout, store?.source, pair.archive, r.id)
    const opened = await openStep(step, { manifest: manifestFile, archive: archiveFile })
    await replayArchive(opened.manifest, opened.tarChunks, opened.tarBytes, expected)
    root = opened.manifest.header.root
  }
  const digest = new TreeDigest()
  digest.addRoot(root!)
  for (const e of expected.values()) digest.add(e)
  if (digest.toHex() !== live.treeDigest) throw new SnapshotError(`the archives of snapshots ${chain[0]!.id}..${liveId} do not add up to the signed tree digest`)

  opts.log?.(`reading the live tree of snapshot ${liveId} (${expected.size} entries expected)`)
  const problems: TreeProblem[] = []
  const report = (path: string, problem: string): void => {
    if (problems.length < MAX_REPORTED) problems.push({ path, problem })
  }
  const rootDir = byteStringOf(layout.tree(state.live.slot))
  const absOf = (rel: string): FsPath => fsPath(rel ? `${rootDir}/${rel}` : rootDir)
  /** Times are compared to the microsecond: what Node can set (core/mtime.ts). */
  const timeProblem = (st: BigIntStats, mtime: string): string | null =>
    st.mtimeNs / 1000n === mtimeMicros(mtime) ? null : `mtime ${mtimeFromNs(st.mtimeNs)}, the snapshot says ${mtime}`
  let checked = 0
  const rootStat = lstatSync(absOf(''), { bigint: true })
  const rootMode = Number(rootStat.mode & 0o7777n)
  if (rootMode !== root!.mode) report('', `the root's mode is ${rootMode.toString(8)}, the snapshot says ${root!.mode.toString(8)}`)
  const rootTime = timeProblem(rootStat, root!.mtime)
  if (rootTime) report('', `the root's ${rootTime}`)
  const walk = (rel: string): void => {
    for (const nameBuf of readdirSync(absOf(rel), { encoding: 'buffer' })) {
      const name = bytesOf(nameBuf)
      const path = rel ? `${rel}/${name}` : name
      const abs = absOf(path)
      const st = lstatSync(abs, { bigint: true })
      const want = expected.get(path)
      expected.delete(path)
      checked++
      if (!want) {
        report(path, 'not in the snapshot')
        if (st.isDirectory()) walk(path)
        continue
      }
      const mode = Number(st.mode & 0o7777n)
      if (want.type === 'f') {
        if (!st.isFile()) report(path, 'should be a regular file')
        else if (st.size !== BigInt(want.size)) report(path, `${st.size} bytes, the manifest says ${want.size}`)
        else if (createHash('sha256').update(readFileSync(abs)).digest('hex') !== want.sha256) report(path, 'content differs from the snapshot')
        else if (mode !== want.mode) report(path, `mode ${mode.toString(8)}, the manifest says ${want.mode.toString(8)}`)
        else checkTime(path, st, want.mtime)
      } else if (want.type === 'd') {
        if (!st.isDirectory()) report(path, 'should be a directory')
        else {
          if (mode !== want.mode) report(path, `mode ${mode.toString(8)}, the manifest says ${want.mode.toString(8)}`)
          else checkTime(path, st, want.mtime)
          walk(path)
        }
      } else if (!st.isSymbolicLink()) report(path, 'should be a symlink')
      else {
        const target = bytesOf(readlinkSync(abs, { encoding: 'buffer' }))
        if (target !== want.target) report(path, `links to ${displayPath(target)}, the manifest says ${displayPath(want.target)}`)
        else checkTime(path, st, want.mtime)
      }
    }
  }
  const checkTime = (path: string, st: BigIntStats, mtime: string): void => {
    const problem = timeProblem(st, mtime)
    if (problem) report(path, problem)
  }
  walk('')
  for (const path of expected.keys()) report(path, 'missing')
  return { id: liveId, checked, problems }
}

/**
 * One archive onto the expected map: its deletions, then its entries, each file with the sha256
 * of the bytes the archive holds for it.
 */
async function replayArchive(manifest: ManifestCursor, tarChunks: AsyncIterable<Buffer>, tarBytes: number, expected: Map<string, TreeEntry>): Promise<void> {
  try {
    await replayInLockstep(new ManifestLockstep(manifest), tarChunks, tarBytes, expected)
  } finally {
    await manifest.close()
  }
}

async function replayInLockstep(lockstep: ManifestLockstep, tarChunks: AsyncIterable<Buffer>, tarBytes: number, expected: Map<string, TreeEntry>): Promise<void> {
  await lockstep.deletions((path) => {
    expected.delete(path) // manifests list every deleted path, children too
  })
  let file: { entry: ManifestFileEntry; hash: Hash } | null = null
  const reader = new TarReader({
    entry(h) {
      const e = lockstep.match(h)
      if (e.type === 'f') file = { entry: e, hash: createHash('sha256') }
      else expected.set(e.path, e)
    },
    data(chunk) {
      file!.hash.update(chunk)
    },
    end() {
      if (!file) return
      expected.set(file.entry.path, { ...file.entry, sha256: file.hash.digest('hex') })
      file = null
    },
  })
  await feedTar(reader, tarChunks, tarBytes, lockstep)
  await lockstep.finish()
}

async function fetchIfNeeded(layout: ReplicaLayout, source: ObjectSource | undefined, ref: { path: string; sha256: string; length: number }, id: number): Promise<string> {
  if (source) return ensureObject(layout, source, ref)
  const noSource: ObjectSource = {
    description: 'no store',
    getSmall: async () => null,
    fetchObject: async () => {
      throw new NoSnapshotError(`the objects of snapshot ${id} are no longer kept on this replica: give --from to fetch them from the store`)
    },
  }
  return ensureObject(layout, noSource, ref)
}
