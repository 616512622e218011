import { createPublicKey, randomUUID, type KeyObject } from 'node:crypto'
import { lstat, mkdir, readFile, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pairOf, planPull, type PlanStep } from '../core/chain-plan.js'
import { ChecksumMismatchError, LengthMismatchError, NoSnapshotError, UsageError } from '../core/errors.js'
import { DEFAULT_FULL_POLICY } from '../core/full-policy.js'
import { keyIdOf } from '../core/pointer.js'
import type { ObjectRef, SnapshotRecord } from '../core/snapshot-record.js'
import { acquireLock } from '../fs/lock-file.js'
import { applyArchive } from '../restore/apply-archive.js'
import { openStep } from '../restore/open-step.js'
import { StoreClient, type RecordLookup } from '../store/store-client.js'
import { StoreLayout } from '../store/store-layout.js'
import { buildLocked, type BuildResult } from './build.js'
import { ROLLBACK_WORK_PREFIX } from './prune.js'
import { sha256OfFile } from '../fs/file-sha256.js'

/**
 * `snapshot rollback --store DIR --to ID`: publishes a new snapshot, with the next id, whose tree
 * is snapshot ID's. It rebuilds ID's tree from the store's own objects (its full archive and the
 * deltas after it, applied and checked exactly as a replica does) in a work directory under
 * .state, and runs the normal build on it: the new snapshot is an ordinary delta against the
 * latest, so replicas converge through their normal pull and need not be told anything. The
 * store's lock is held throughout, so no build publishes in between.
 */
export interface FleetRollbackOptions {
  readonly store: string
  readonly to: number
  readonly privateKey: KeyObject | null
  readonly lockWaitMs?: number
  readonly now?: () => Date
  readonly log?: (line: string) => void
}

export type FleetRollbackResult = BuildResult & { readonly rollbackOf: number; readonly previousLatest: number }

export async function fleetRollback(opts: FleetRollbackOptions): Promise<FleetRollbackResult> {
  const log = opts.log ?? (() => undefined)
  const layout = new StoreLayout(opts.store)
  if (!(await lstat(layout.stateDir).catch(() => null))?.isDirectory()) {
    throw new NoSnapshotError(`${opts.store} is not a store (no .state directory): nothing to roll back`)
  }
  const lock = await acquireLock(layout.lock, `store ${opts.store}`, { waitMs: opts.lockWaitMs ?? 0 })
  const work = join(layout.stateDir, `${ROLLBACK_WORK_PREFIX}${opts.to}-${randomUUID()}`)
  try {
    const store = StoreClient.local(opts.store)
    const pointer = await store.pointer()
    const latest = pointer.latest
    await checkSigningKey(layout, opts.privateKey, log)
    if (opts.to > latest.id) throw new NoSnapshotError(`snapshot ${opts.to} is not in the store: the latest is ${latest.id} (see \`snapshot list\`)`)

    const records = new Map<number, SnapshotRecord>(pointer.chain.map((r) => [r.id, r]))
    const lookup: RecordLookup = async (id) => records.get(id) ?? (await store.record(id))
    const target = await lookup(opts.to)
    if (!target) throw new NoSnapshotError(`snapshot ${opts.to} is not in the store: it was pruned, or never published (see \`snapshot list\`)`)
    for (const r of await checkPublished(store, lookup, latest, opts.to)) records.set(r.id, r)
    // The target and the records before it, back to its nearest full archive.
    records.set(target.id, target)
    for (const r of await store.walkBack(target, (r) => !r.full, { lookup })) records.set(r.id, r)
    let steps: readonly PlanStep[]
    try {
      steps = planPull({ baseId: null, latestId: opts.to, records, cached: () => true }).steps
    } catch (err) {
      throw new NoSnapshotError(`cannot rebuild snapshot ${opts.to}: the full archive before it, or a record between, was pruned`, { cause: err })
    }
    await checkObjectsPresent(layout, steps, opts.to)

    log(`rebuilding the tree of snapshot ${opts.to} from ${steps.map((s) => `${s.use} ${s.record.id}`).join(', ')}`)
    const tree = join(work, 'tree')
    await mkdir(tree, { recursive: true })
    for (const step of steps) await applyStep(layout, tree, step)

    log(`publishing the tree of snapshot ${opts.to} as a new snapshot`)
    const result = await buildLocked({
      source: tree,
      store: opts.store,
      privateKey: opts.privateKey,
      forceFull: false,
      policy: DEFAULT_FULL_POLICY,
      rollbackOf: opts.to,
      expectTreeDigest: target.treeDigest,
      ...(opts.now ? { now: opts.now } : {}),
      log,
    })
    return { ...result, rollbackOf: opts.to, previousLatest: latest.id }
  } finally {
    await rm(work, { recursive: true, force: true }).catch((err: unknown) => log(`warning: could not remove ${work}: ${(err as Error).message}`))
    lock.release()
  }
}

/**
 * A store whose pointer is signed must stay signed: an unsigned pointer would make every replica
 * that holds --pubkey refuse the rollback and keep serving the bad tree.
 */
async function checkSigningKey(layout: StoreLayout, key: KeyObject | null, log: (line: string) => void): Promise<void> {
  const envelope = JSON.parse(await readFile(layout.latest, 'utf8')) as { signatures?: { keyid?: string }[] }
  const keyids = (envelope.signatures ?? []).map((s) => s.keyid)
  if (!key) {
    if (keyids.length > 0) throw new UsageError('the store is signed: pass --key with the signing key, or replicas with --pubkey would refuse the rollback')
    log('warning: no --key given: the snapshot is unsigned and replicas with --pubkey will refuse it')
    return
  }
  const mine = keyIdOf(createPublicKey(key))
  if (keyids.length > 0 && !keyids.includes(mine)) log(`warning: --key (key id ${mine}) did not sign the latest snapshot (${keyids.join(', ')}): replicas must trust it`)
}

/**
 * Only a snapshot the pointer once named: not the record of a build that died before publishing.
 * Returns the records walked through, from the latest back to `id`.
 */
async function checkPublished(store: StoreClient, lookup: RecordLookup, latest: SnapshotRecord, id: number): Promise<SnapshotRecord[]> {
  const walked = await store.walkBack(latest, (r) => r.id > id, { lookup })
  const reached = walked[walked.length - 1] ?? latest
  if (reached.id < id) throw new NoSnapshotError(`snapshot ${id} was never published (a build that died before the pointer moved): nothing to roll back to`)
  return walked
}

async function checkObjectsPresent(layout: StoreLayout, steps: readonly PlanStep[], id: number): Promise<void> {
  const missing: string[] = []
  for (const step of steps) {
    const pair = pairOf(step)
    for (const ref of [pair.manifest, pair.archive]) {
      const st = await stat(layout.object(ref.path)).catch(() => null)
      if (!st?.isFile()) missing.push(ref.path)
    }
  }
  if (missing.length > 0) {
    throw new NoSnapshotError(`cannot rebuild snapshot ${id}: ${missing.length} of its objects are gone (pruned or lost): ${missing.join(', ')}`)
  }
}

/** One archive onto the work tree, every object and entry checked as a replica checks them. */
async function applyStep(layout: StoreLayout, tree: string, step: PlanStep): Promise<void> {
  const pair = pairOf(step)
  const files = { manifest: await checkedObject(layout, pair.manifest), archive: await checkedObject(layout, pair.archive) }
  await applyArchive({ root: tree, ...(await openStep(step, files)) })
}

/** An object of the store's own, its length and sha256 checked against the record before it is used. */
async function checkedObject(layout: StoreLayout, ref: ObjectRef): Promise<string> {
  const file = layout.object(ref.path)
  const size = (await stat(file)).size
  if (size !== ref.length) throw new LengthMismatchError(ref.path, ref.length, size)
  const actual = await sha256OfFile(file)
  if (actual !== ref.sha256) throw new ChecksumMismatchError(ref.path, ref.sha256, actual)
  return file
}

export function describeRollback(r: FleetRollbackResult): string {
  if (!r.created) return `nothing to publish: the latest snapshot ${r.id} already has the tree of snapshot ${r.rollbackOf}`
  return `snapshot ${r.id} republishes the tree of snapshot ${r.rollbackOf} (was ${r.previousLatest}): ${r.changed} changed, ${r.deleted} deleted`
}
