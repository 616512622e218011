import { ExitCode } from '../core/errors.js'

/**
 * `snapshot fleet`, the pure part: what each replica's `/status` said (or why it said nothing),
 * and the store's snapshots, become one row per replica, then the problems, then the exit code.
 * No I/O here: the command fetches, this decides.
 */

/** The parts of a replica's `/status` (ReplicaStatusReport) that the fleet view reads. */
export interface FetchedStatus {
  readonly target?: string
  readonly live?: { id: number; created: string | null } | null
  readonly pinned?: { id: number; since: string; reason: string } | null
  readonly lastPull?: { at: string; ok: boolean; id?: number; code?: string; error?: string } | null
  readonly lastOutcome?: { at: string; exitCode: number; code: string | null; error: string | null } | null
  readonly store?: { latestId?: number; created?: string } | null
}

export type FetchResult = { readonly url: string; readonly status: FetchedStatus } | { readonly url: string; readonly error: string }

/** The store as `--from` shows it: its latest id and each snapshot's build time. */
export interface StoreView {
  readonly latest: number
  readonly snapshots: readonly { id: number; created: string }[]
}

export interface FleetRow {
  readonly url: string
  readonly reachable: boolean
  readonly error: string | null
  readonly target: string | null
  readonly liveId: number | null
  /** Seconds since the live snapshot was built. */
  readonly ageSeconds: number | null
  /** The newest snapshot this row is compared with: the store's (--from) or the replica's own last view. */
  readonly latestId: number | null
  /** Snapshots the replica lacks. */
  readonly lagSnapshots: number | null
  /** How long the oldest snapshot the replica lacks has been published (0 when up to date). */
  readonly lagSeconds: number | null
  readonly lastPull: { at: string; exitCode: number | null; code: string | null; error: string | null } | null
  readonly pinned: { id: number; since: string; reason: string } | null
}

export type ProblemKind = 'unreachable' | 'stale' | 'lagging' | 'pinned'
export interface FleetProblem {
  readonly url: string
  readonly kind: ProblemKind
  readonly message: string
}

export interface FleetLimits {
  /** A live snapshot built longer ago than this is stale (0: never). */
  readonly maxAgeSeconds: number
  /** A replica that has lacked a published snapshot for longer than this is lagging. */
  readonly maxLagSeconds: number
}

const secondsSince = (iso: string, nowMs: number): number => Math.max(0, Math.round((nowMs - Date.parse(iso)) / 1000))

export function fleetRow(f: FetchResult, store: StoreView | null, nowMs: number): FleetRow {
  if ('error' in f) return { url: f.url, reachable: false, error: f.error, target: null, liveId: null, ageSeconds: null, latestId: null, lagSnapshots: null, lagSeconds: null, lastPull: null, pinned: null }
  const s = f.status
  const liveId = s.live?.id ?? null
  const ageSeconds = s.live?.created ? secondsSince(s.live.created, nowMs) : null
  // The replica's own view of the store (its last pull) stands in when --from is not given.
  const latestId = store?.latest ?? s.store?.latestId ?? null
  let lagSeconds: number | null = null
  if (latestId !== null) {
    if ((liveId ?? 0) >= latestId) lagSeconds = 0
    else if (store) {
      const lacking = store.snapshots.filter((x) => x.id > (liveId ?? 0))
      const oldest = lacking.reduce<string | null>((o, x) => (o === null || Date.parse(x.created) < Date.parse(o) ? x.created : o), null)
      lagSeconds = oldest ? secondsSince(oldest, nowMs) : null
    } else if (s.store?.created) lagSeconds = secondsSince(s.store.created, nowMs) // a lower bound: only the latest's time is known
  }
  const o = s.lastOutcome
  const p = s.lastPull
  const lastPull = o
    ? { at: o.at, exitCode: o.exitCode, code: o.code, error: o.error }
    : p
      ? { at: p.at, exitCode: p.ok ? 0 : null, code: p.code ?? null, error: p.error ?? null }
      : null
  return {
    url: f.url,
    reachable: true,
    error: null,
    target: s.target ?? null,
    liveId,
    ageSeconds,
    latestId,
    lagSnapshots: latestId === null ? null : Math.max(0, latestId - (liveId ?? 0)),
    lagSeconds,
    lastPull,
    pinned: s.pinned ?? null,
  }
}

/** Every problem of every row, in row order. A failed last pull alone is not one: it shows as lag or staleness once it matters. */
export function fleetProblems(rows: readonly FleetRow[], limits: FleetLimits): FleetProblem[] {
  const out: FleetProblem[] = []
  for (const r of rows) {
    if (!r.reachable) {
      out.push({ url: r.url, kind: 'unreachable', message: `no status: ${r.error}` })
      continue
    }
    if (r.pinned) out.push({ url: r.url, kind: 'pinned', message: `pinned at snapshot ${r.pinned.id} since ${r.pinned.since} (${r.pinned.reason}): pulls change nothing until \`snapshot unpin\`` })
    if (r.liveId === null) out.push({ url: r.url, kind: 'stale', message: 'serves nothing yet' })
    else if (limits.maxAgeSeconds > 0 && r.ageSeconds !== null && r.ageSeconds > limits.maxAgeSeconds) out.push({ url: r.url, kind: 'stale', message: `live snapshot ${r.liveId} was built ${r.ageSeconds} s ago, more than --max-age ${limits.maxAgeSeconds} s` })
    if (!r.pinned && r.lagSeconds !== null && r.lagSeconds > limits.maxLagSeconds) out.push({ url: r.url, kind: 'lagging', message: `${r.lagSnapshots} snapshots behind ${r.latestId}, for ${r.lagSeconds} s, more than --max-lag ${limits.maxLagSeconds} s` })
  }
  return out
}

export function fleetExitCode(problems: readonly FleetProblem[]): number {
  return problems.length === 0 ? ExitCode.Ok : ExitCode.FleetProblem
}
