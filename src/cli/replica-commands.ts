import { SnapshotError, VerifyError } from '../core/errors.js'
import { openStore, s3Flags, type SourceFlags } from './open-sources.js'
import { rollbackReplica, unpinReplica } from '../replica/replica-rollback.js'
import { replicaStatus } from '../replica/replica-status.js'
import { verifyLiveTree } from '../replica/verify-tree.js'
import { readTrustedKeys } from './keys.js'
import type { Output } from './output.js'
import { checkFreshness } from '../core/freshness.js'
import { describeMirrors } from './pull-command.js'
import { displayPath } from '../core/byte-path.js'

/** The replica-side operator commands: rollback, unpin, status, verify --target. */
export interface ReplicaCommandOptions extends SourceFlags {
  target: string
  state?: string
  trees: number
  /** Repeated: mirrors (status, unpin); `rollback` and `verify` give one. */
  from?: string | string[]
  pubkey: string[]
  token?: string
  wait: number
}

/** The store given with --from (none without), read under --pubkey's keys. */
async function storeOf(o: ReplicaCommandOptions, out?: Output) {
  const trust = await readTrustedKeys(o.pubkey)
  const token = o.token
  const froms = o.from === undefined ? [] : typeof o.from === 'string' ? [o.from] : o.from
  if (froms.length === 0) return undefined
  return openStore(froms, { ...(token ? { token } : {}), ...s3Flags(o) }, { trust, pointerTimeoutMs: 30_000, ...(out ? { log: (l: string) => out.log(l) } : {}) })
}
function replicaBase(o: ReplicaCommandOptions) {
  return { target: o.target, trees: o.trees, ...(o.state ? { stateDir: o.state } : {}) }
}

export async function replicaRollbackCommand(o: ReplicaCommandOptions & { to?: number }, out: Output): Promise<void> {
  const store = await storeOf(o, out)
  const r = await rollbackReplica({
    ...replicaBase(o),
    ...(o.to !== undefined ? { to: o.to } : {}),
    ...(store ? { store } : {}),
    lockWaitMs: o.wait * 1000,
    log: (l) => out.log(l),
  })
  out.result(r, [`rolled back: ${o.target} serves snapshot ${r.to} (was ${r.from}${r.instant ? ', instant' : ', rebuilt from the store'}); pinned: \`snapshot unpin --target ${o.target}\` resumes pulls`])
}

export async function unpinCommand(o: ReplicaCommandOptions, out: Output): Promise<void> {
  const r = await unpinReplica({ ...replicaBase(o), lockWaitMs: o.wait * 1000 })
  out.result(r, [r.wasPinned === null ? `${o.target} was not pinned` : `unpinned: the next pull moves ${o.target} on from snapshot ${r.wasPinned}`])
}

export async function statusCommand(o: ReplicaCommandOptions & { maxAge: number }, out: Output): Promise<void> {
  const store = await storeOf(o)
  const s = await replicaStatus({ ...replicaBase(o), ...(store ? { store } : {}) })
  if (!s) throw new SnapshotError(`${o.target} is not a replica yet: run \`snapshot pull\` first`)
  const human = [
    s.live ? `live: snapshot ${s.live.id}${s.live.created ? `, built ${s.live.created} (${formatAge(s.live.ageSeconds)} ago)` : ''}, live since ${s.live.since}${s.linkOk ? '' : ' (WARNING: the symlink does not point at it)'}` : 'live: nothing yet',
    `staged: ${s.staged ? `snapshot ${s.staged.id}` : 'nothing'}`,
    `pinned: ${s.pinned ? `at snapshot ${s.pinned.id} since ${s.pinned.since} (${s.pinned.reason})` : 'no'}`,
    `last pull: ${s.lastPull ? `${s.lastPull.at} ${s.lastPull.ok ? `ok (snapshot ${s.lastPull.id})` : `FAILED [${s.lastPull.code}] ${s.lastPull.error}`}` : 'never'}`,
    ...(s.store ? ['latestId' in s.store ? `store: latest snapshot ${s.store.latestId} (${s.store.lag} ahead of this replica)` : `store: unreachable [${s.store.code}] ${s.store.error}`] : []),
    ...(s.mirrors ? describeMirrors(s.mirrors) : []),
  ]
  out.result(s, human)
  // The newest snapshot seen: the store's when it answered, else the live one's.
  const newest = s.store && 'latestId' in s.store ? s.store.created : (s.live?.created ?? null)
  checkFreshness(newest, o.maxAge, Date.now(), s.store && 'latestId' in s.store ? (s.store.latestParentCreated ?? null) : null)
}

export async function verifyTargetCommand(o: ReplicaCommandOptions, out: Output): Promise<void> {
  const store = await storeOf(o, out)
  const r = await verifyLiveTree({ ...replicaBase(o), ...(store ? { store } : {}), log: (l) => out.log(l) })
  // Paths are bytes: shown escaped (byte-path.ts displayPath), in the JSON output too; '.' is the root.
  const problems = r.problems.map((p) => ({ path: p.path === '' ? '.' : displayPath(p.path), problem: p.problem }))
  out.result({ ...r, problems }, problems.length === 0 ? [`ok: the live tree of ${o.target} equals snapshot ${r.id} (${r.checked} entries)`] : [`${problems.length} paths differ from snapshot ${r.id}:`, ...problems.map((p) => `  ${p.path}: ${p.problem}`)])
  if (r.problems.length > 0) throw new VerifyError(`the live tree of ${o.target} differs from snapshot ${r.id} in ${r.problems.length} paths`)
}

function formatAge(s: number | null): string {
  if (s === null) return '?'
  if (s < 120) return `${s} s`
  if (s < 7200) return `${Math.round(s / 60)} min`
  return `${(s / 3600).toFixed(1)} h`
}
