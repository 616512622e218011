import { MirroredSource, type MirrorReport } from '../http/mirrored-source.js'
import { openSources, type SourceFlags } from './open-sources.js'
import { StaleError } from '../core/errors.js'
import { pull } from '../replica/pull.js'
import { makeProgress } from './progress.js'
import { readPublicKeyFiles } from './keys.js'
import { formatBytes, type Output } from './output.js'
import { runOnSchedule, type ScheduleFlags } from './scheduler.js'

export interface PullCommandOptions extends Partial<ScheduleFlags>, SourceFlags {
  /** One store, or several mirrors of it (a failover list). */
  from: string[]
  target: string
  pubkey: string[]
  swap?: boolean
  json?: boolean
  state?: string
  trees: number
  token?: string
  retries: number
  timeout: number
  wait: number
  unpin?: boolean
  maxDelete: number
  force?: boolean
  preSwap?: string
  postSwap?: string
  hookTimeout: number
  maxAge: number
  quiet?: boolean
}

/** With --cron, keeps running and pulls on the schedule; otherwise pulls once. */
export async function pullCommand(opts: PullCommandOptions, out: Output): Promise<void> {
  const cron = opts.cron
  if (cron !== undefined) return runOnSchedule(() => pullOnce(opts, out), { ...opts, cron }, out)
  await pullOnce(opts, out)
}

async function pullOnce(opts: PullCommandOptions, out: Output): Promise<void> {
  const keys = await readPublicKeyFiles(opts.pubkey)
  if (keys.length === 0) out.log('warning: no --pubkey given: the pointer is not authenticated')
  const token = opts.token ?? process.env.SNAPSHOT_TOKEN
  const source = openSources(
    opts.from,
    { ...(token ? { token } : {}), retries: opts.retries, timeoutMs: { connect: opts.timeout * 1000, idle: opts.timeout * 1000 }, ...s3Flags(opts) },
    { trustedKeys: keys, pointerTimeoutMs: opts.timeout * 1000, log: (l) => out.log(l) },
  )
  const pulled = await pull({
    source,
    target: opts.target,
    ...(opts.state ? { stateDir: opts.state } : {}),
    trustedKeys: keys,
    swap: opts.swap ?? false,
    trees: opts.trees,
    lockWaitMs: opts.wait * 1000,
    unpin: opts.unpin ?? false,
    maxDeletePercent: opts.maxDelete,
    force: opts.force ?? false,
    // The catch-up after the swap yields the CPU; a --cron process keeps running, so only where
    // it may raise its priority back afterwards.
    lowPriorityCatchUp: opts.cron === undefined || process.getuid?.() === 0,
    hooks: { ...(opts.preSwap ? { preSwap: opts.preSwap } : {}), ...(opts.postSwap ? { postSwap: opts.postSwap } : {}), timeoutMs: opts.hookTimeout * 1000 },
    progress: makeProgress({ enabled: !opts.quiet && !opts.json }),
    log: (l) => out.log(l),
  })
  // With several --from, which mirror served and which were skipped (down, stale, invalid).
  const mirrors = source instanceof MirroredSource ? source.reports : undefined
  const r = mirrors ? { ...pulled, mirrors } : pulled
  const human =
    r.action === 'up-to-date'
      ? [`up to date: ${opts.target} serves snapshot ${r.id}`]
      : r.action === 'pinned'
      ? [`pinned: ${opts.target} stays at snapshot ${r.id} (\`snapshot pull --unpin\` resumes)`]
      : [
          `${r.action === 'swapped' ? 'swapped' : 'staged (run `snapshot swap` to go live)'}: snapshot ${r.id}${r.previousId !== null ? ` (was ${r.previousId})` : ''} in ${r.seconds.toFixed(2)} s`,
          ...(r.plan ? [`downloaded ${formatBytes(r.plan.downloadBytes)}; wrote ${r.applied.filesWritten} files, deleted ${r.applied.deleted} paths`] : []),
          ...(r.catchUp && !r.catchUp.error ? [`caught up the spare tree ${r.catchUp.slot} to snapshot ${r.catchUp.id} (${r.catchUp.filesWritten} files) in ${r.catchUp.seconds.toFixed(2)} s`] : []),
        ]
  if (mirrors) human.push(...describeMirrors(mirrors))
  out.result(r, human)
  checkFreshness(r.latestCreated, opts.maxAge, Date.now())
}

/**
 * A mirror that keeps serving the same old snapshot looks like "up to date" forever. The pointer
 * carries its signed build time: past the bound, say so with an exit code of its own.
 */
export function checkFreshness(created: string | null, maxAgeSeconds: number, nowMs: number): void {
  if (created === null || maxAgeSeconds === 0) return
  const age = Math.round((nowMs - Date.parse(created)) / 1000)
  if (age > maxAgeSeconds) {
    throw new StaleError(`the newest snapshot the store offers was built ${created} (${age} s ago), older than --max-age ${maxAgeSeconds} s: is the master's build running, or is this mirror frozen?`)
  }
}

/** One line per mirror: the one chosen, and why each other one was or was not used. */
export function describeMirrors(mirrors: readonly MirrorReport[]): string[] {
  return mirrors.map((m) =>
    m.status === 'chosen' || m.status === 'current'
      ? `mirror ${m.source}: ${m.status}, snapshot ${m.latestId}`
      : m.status === 'stale'
        ? `mirror ${m.source}: stale (snapshot ${m.latestId}), skipped`
        : `mirror ${m.source}: ${m.status}, skipped [${m.code}] ${m.error}`,
  )
}

export function s3Flags(o: SourceFlags): SourceFlags {
  return { ...(o.endpoint !== undefined ? { endpoint: o.endpoint } : {}), ...(o.region !== undefined ? { region: o.region } : {}), ...(o.pathStyle ? { pathStyle: true } : {}) }
}
