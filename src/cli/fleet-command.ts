import type { Command } from '@commander-js/extra-typings'
import { loadGot } from '../store/load-got.js'
import { FleetProblemError } from '../core/errors.js'
import { openSource } from '../store/open-source.js'
import { StoreClient } from '../store/store-client.js'
import { listStore } from '../store/store-list.js'
import { fleetExitCode, fleetProblems, fleetRow, type FetchResult, type FleetRow, type StoreView } from '../metrics/fleet-evaluate.js'
import { readTrustedKeys } from './keys.js'
import { collect, wholeNumber } from './option-parsers.js'
import { makeOutput, type Output } from './output.js'
import { jsonOption, maxAgeOption, pubkeyOption, quietOption, tokenOption } from './common-options.js'

export interface FleetCommandOptions {
  replica: string[]
  from?: string
  pubkey: string[]
  token?: string
  maxLag: number
  maxAge: number
  timeout: number
  json?: boolean
}

/** The most a `/status` answer may weigh: a sound one is a few kilobytes. */
const STATUS_MAX_BYTES = 1 << 20

/**
 * `snapshot fleet`: every replica's `/status` (served by `pull --cron --metrics-listen`), in one
 * table, and an exit code that says whether any needs attention, so it can be a check itself.
 */
export async function fleetCommand(opts: FleetCommandOptions, out: Output): Promise<void> {
  const nowMs = Date.now()
  // A store that does not answer (or does not verify) is itself a problem; the replicas are then
  // compared with what each one's last pull saw.
  let storeError: string | null = null
  const [fetched, store] = await Promise.all([
    Promise.all(opts.replica.map((url) => fetchStatus(url, opts.timeout * 1000))),
    readStore(opts, out).catch((err: unknown) => {
      const e = err as { code?: string; message?: string }
      storeError = `${e.code ? `[${e.code}] ` : ''}${e.message ?? String(err)}`
      return null
    }),
  ])
  const rows = fetched.map((f) => fleetRow(f, store, nowMs))
  const problems = [
    ...(storeError !== null ? [{ url: opts.from!, kind: 'unreachable' as const, message: `the store did not answer: ${storeError}` }] : []),
    ...fleetProblems(rows, { maxAgeSeconds: opts.maxAge, maxLagSeconds: opts.maxLag }),
  ]
  out.result({ store: store ? { source: opts.from, latest: store.latest } : null, replicas: rows, problems }, [
    ...(store ? [`store ${opts.from}: latest snapshot ${store.latest}`] : []),
    ...table(rows),
    ...(problems.length === 0 ? ['ok: every replica is reachable, current and unpinned'] : problems.map((p) => `PROBLEM ${p.url}: ${p.kind}: ${p.message}`)),
  ])
  if (fleetExitCode(problems) !== 0) {
    const named = [...new Set(problems.filter((p) => p.url !== opts.from || storeError === null).map((p) => p.url))]
    throw new FleetProblemError(`${storeError !== null ? `the store ${opts.from} did not answer; ` : ''}${named.length} of ${rows.length} replicas need attention${named.length ? `: ${named.join(', ')}` : ''}`)
  }
}

async function readStore(opts: FleetCommandOptions, out: Output): Promise<StoreView | null> {
  if (!opts.from) return null
  const trust = await readTrustedKeys(opts.pubkey)
  if (!trust.checked) out.log('warning: no --pubkey given: the store\'s pointer is not authenticated')
  const token = opts.token
  // A check, not a pull: one retry, and the same --timeout as for the replicas.
  const source = openSource(opts.from, { ...(token ? { token } : {}), retries: 1, timeoutMs: { connect: opts.timeout * 1000, idle: opts.timeout * 1000 } })
  const listing = await listStore(new StoreClient(source, trust))
  return { latest: listing.latest, snapshots: listing.snapshots.map((s) => ({ id: s.id, created: s.created })) }
}

/** GET URL/status (or URL, when it already ends in /status); any failure becomes the row's error. */
export async function fetchStatus(url: string, timeoutMs: number): Promise<FetchResult> {
  const statusUrl = /\/status\/?$/.test(url) ? url : `${url.replace(/\/+$/, '')}/status`
  try {
    const got = await loadGot()
    const res = await got(statusUrl, { timeout: { request: timeoutMs }, retry: { limit: 1 }, throwHttpErrors: false, followRedirect: false, responseType: 'text' })
    if (res.statusCode !== 200) return { url, error: `HTTP ${res.statusCode} from ${statusUrl}` }
    if (res.body.length > STATUS_MAX_BYTES) return { url, error: `${statusUrl} answered more than ${STATUS_MAX_BYTES} bytes` }
    const status = JSON.parse(res.body) as unknown
    if (typeof status !== 'object' || status === null || Array.isArray(status)) return { url, error: `${statusUrl} did not answer a JSON object` }
    return { url, status }
  } catch (err) {
    const e = err as { code?: string; message?: string }
    return { url, error: `${statusUrl}: ${e.code ? `[${e.code}] ` : ''}${e.message ?? String(err)}` }
  }
}

function table(rows: readonly FleetRow[]): string[] {
  const cells = rows.map((r) => [
    r.url,
    r.liveId === null ? (r.reachable ? 'none' : '?') : String(r.liveId),
    r.ageSeconds === null ? '-' : formatSeconds(r.ageSeconds),
    r.lagSnapshots === null ? '-' : r.lagSnapshots === 0 ? '0' : `${r.lagSnapshots} (${r.lagSeconds === null ? '?' : formatSeconds(r.lagSeconds)})`,
    !r.reachable ? `UNREACHABLE: ${r.error}` : r.lastPull === null ? 'never' : r.lastPull.error === null ? `ok ${r.lastPull.at}` : `exit ${r.lastPull.exitCode ?? '?'} ${r.lastPull.at} [${r.lastPull.code}] ${r.lastPull.error}`,
    r.pinned ? `pinned at ${r.pinned.id}` : r.reachable ? 'no' : '?',
  ])
  const head = ['replica', 'live', 'age', 'lag', 'last pull', 'pinned']
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (i === 4 ? 0 : c[i]!.length))))
  const fmt = (c: string[]): string => [c[0]!.padEnd(widths[0]!), c[1]!.padStart(widths[1]!), c[2]!.padStart(widths[2]!), c[3]!.padStart(widths[3]!), c[5]!.padEnd(widths[5]!), c[4]!].join('  ')
  return [fmt(head), ...cells.map(fmt)]
}

function formatSeconds(s: number): string {
  if (s < 120) return `${s} s`
  if (s < 7200) return `${Math.round(s / 60)} min`
  return `${(s / 3600).toFixed(1)} h`
}

export function registerFleetCommand(program: Command): void {
  program
    .command('fleet')
    .description('Every replica at a glance, from their /status endpoints (`pull --cron --metrics-listen`): live snapshot, age, lag behind the store, last pull, pin. Exit 16 when any is unreachable, stale, lagging or pinned.')
    .requiredOption('--replica <url>', 'a replica\'s --metrics-listen base URL (http://host:port) or its /status URL; repeat for each', collect, [] as string[])
    .option('--from <url|dir>', 'the store: compare every replica with its latest snapshot (otherwise with what each replica last saw)')
    .addOption(pubkeyOption('trusted ed25519 public key for the store\'s pointer (repeatable)'))
    .addOption(tokenOption('send "Authorization: Bearer <token>" to the store'))
    .option('--max-lag <seconds>', 'a replica that has lacked a published snapshot for longer than this is lagging', wholeNumber('--max-lag', 0, 10 * 365 * 86400), 900)
    .addOption(maxAgeOption('a replica whose live snapshot was built longer ago than this is stale; 0: never'))
    .option('--timeout <seconds>', 'how long to wait for each replica\'s answer', wholeNumber('--timeout', 1, 3600), 10)
    .addOption(jsonOption('print one JSON object: { store, replicas, problems }'))
    .addOption(quietOption())
    .action(async (o) => fleetCommand(o, makeOutput(o)))
}
