import { createHash } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { decompressFileToBuffer } from '../archive/decompress.js'
import { NoSnapshotError, SnapshotError } from '../core/errors.js'
import type { SnapshotRecord } from '../core/snapshot-record.js'
import { TreeDigest } from '../core/tree-digest.js'
import type { TreeEntry } from '../core/tree-entry.js'
import { MAX_PATH_BYTES } from '../core/tree-path.js'
import type { ObjectSource } from '../http/object-source.js'
import { ManifestCursor } from './manifest-cursor.js'
import { ensureObject } from './object-cache.js'
import { fetchRecord, loadCachedRecord, slotNames } from './pull.js'
import { ReplicaLayout } from './replica-layout.js'
import { loadState } from './replica-state.js'

/**
 * `snapshot verify --target PATH`: reads the whole live tree and compares it with the manifest of
 * its snapshot (the latest full manifest plus the deltas up to it, each checked against the signed
 * tree digest), naming every path that differs. A whole-tree read by nature: run it when in doubt,
 * not every hour.
 */
export interface TreeProblem {
  readonly path: string
  readonly problem: string
}
export interface TreeVerifyResult {
  readonly id: number
  readonly checked: number
  readonly problems: readonly TreeProblem[]
}

const MAX_REPORTED = 10_000

export async function verifyLiveTree(opts: { target: string; stateDir?: string; trees?: number; source?: ObjectSource; trustedKeys: readonly KeyObject[]; log?: (l: string) => void }): Promise<TreeVerifyResult> {
  const layout = new ReplicaLayout(opts.target, opts.stateDir)
  const state = await loadState(layout.stateFile, slotNames(opts.trees ?? 2))
  if (!state?.live) throw new SnapshotError(`${opts.target} serves no snapshot yet`)
  const liveId = state.live.id
  const getRecord = async (id: number): Promise<SnapshotRecord | undefined> =>
    (await loadCachedRecord(layout, id)) ?? (opts.source ? await fetchRecord(opts.source, layout, opts.trustedKeys, id) : undefined)

  // The chain back to a full archive: that full manifest, then each delta manifest forward.
  const chain: SnapshotRecord[] = []
  for (let r = await getRecord(liveId); ; ) {
    if (!r) throw new NoSnapshotError(`the records needed to rebuild the manifest of snapshot ${liveId} are gone${opts.source ? '' : ' (give --from to fetch them from the store)'}`)
    chain.unshift(r)
    if (r.full) break
    if (r.parent === null) throw new NoSnapshotError(`snapshot ${r.id} has neither a full archive nor a parent`)
    r = await getRecord(r.parent)
  }
  const expected = new Map<string, TreeEntry>()
  for (const [i, r] of chain.entries()) {
    const pair = i === 0 ? r.full! : r.delta!
    const file = await fetchIfNeeded(layout, opts.source, pair.manifest, r.id)
    const cursor = new ManifestCursor(await decompressFileToBuffer(file, (pair.entries + pair.deleted + 1) * (2 * MAX_PATH_BYTES + 256), `manifest of snapshot ${r.id}`))
    for (let line = cursor.next(); line; line = cursor.next()) {
      if (line.kind === 'deleted') expected.delete(line.path) // manifests list every deleted path, children too
      else expected.set(line.entry.path, line.entry)
    }
  }
  const digest = new TreeDigest()
  for (const e of expected.values()) digest.add(e)
  const live = chain[chain.length - 1]!
  if (digest.toHex() !== live.treeDigest) throw new SnapshotError(`the manifests of snapshots ${chain[0]!.id}..${liveId} do not add up to the signed tree digest`)

  opts.log?.(`reading the live tree of snapshot ${liveId} (${expected.size} entries expected)`)
  const problems: TreeProblem[] = []
  const report = (path: string, problem: string): void => {
    if (problems.length < MAX_REPORTED) problems.push({ path, problem })
  }
  const root = layout.tree(state.live.slot)
  let checked = 0
  const walk = (rel: string): void => {
    for (const name of readdirSync(rel ? join(root, rel) : root)) {
      const path = rel ? `${rel}/${name}` : name
      const abs = join(root, path)
      const st = lstatSync(abs)
      const want = expected.get(path)
      expected.delete(path)
      checked++
      if (!want) {
        report(path, 'not in the snapshot')
        if (st.isDirectory()) walk(path)
        continue
      }
      const mode = st.mode & 0o7777
      if (want.type === 'f') {
        if (!st.isFile()) report(path, 'should be a regular file')
        else if (st.size !== want.size) report(path, `${st.size} bytes, the manifest says ${want.size}`)
        else if (createHash('sha256').update(readFileSync(abs)).digest('hex') !== want.sha256) report(path, 'content differs from the manifest')
        else if (mode !== want.mode) report(path, `mode ${mode.toString(8)}, the manifest says ${want.mode.toString(8)}`)
      } else if (want.type === 'd') {
        if (!st.isDirectory()) report(path, 'should be a directory')
        else {
          if (mode !== want.mode) report(path, `mode ${mode.toString(8)}, the manifest says ${want.mode.toString(8)}`)
          walk(path)
        }
      } else if (!st.isSymbolicLink()) report(path, 'should be a symlink')
      else if (readlinkSync(abs) !== want.target) report(path, `links to ${readlinkSync(abs)}, the manifest says ${want.target}`)
    }
  }
  walk('')
  for (const path of expected.keys()) report(path, 'missing')
  return { id: liveId, checked, problems }
}

async function fetchIfNeeded(layout: ReplicaLayout, source: ObjectSource | undefined, ref: { path: string; sha256: string; length: number }, id: number): Promise<string> {
  if (source) return ensureObject(layout, source, ref)
  const noSource: ObjectSource = {
    description: 'no store',
    getSmall: async () => null,
    fetchObject: async () => {
      throw new NoSnapshotError(`the manifest of snapshot ${id} is no longer kept on this replica: give --from to fetch it from the store`)
    },
  }
  return ensureObject(layout, noSource, ref)
}
