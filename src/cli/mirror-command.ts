import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Command } from '@commander-js/extra-typings'
import { UsageError } from '../core/errors.js'
import { announce, type HeldLock } from '../fs/lock-file.js'
import { MIRROR_WATCH } from '../store/store-layout.js'
import { checkFreshness } from '../core/freshness.js'
import { MirroredSource } from '../store/mirrored-source.js'
import type { TrustedKeys } from '../store/trusted-keys.js'
import { parseRate } from '../store/rate-limit.js'
import { DirDestination } from '../publish/dir-destination.js'
import type { MirrorResult } from '../publish/mirror-store.js'
import { DEFAULT_CONCURRENCY } from '../publish/publish-plan.js'
import type { StoreDestination } from '../publish/store-destination.js'
import { WATCH_DEFAULTS } from '../replica/watch-policy.js'
import { isS3Url, parseS3Url } from '../store/s3-location.js'
import { jsonOption, maxAgeOption, pubkeyOption, quietOption, tokenOption, waitOption } from './common-options.js'
import { readTrustedKeys } from './keys.js'
import { openStoreFromFlags, s3Flags, type SourceFlags } from './open-sources.js'
import { checked, collect, wholeNumber } from './option-parsers.js'
import { formatBytes, makeOutput, type Output } from './output.js'
import { describeMirrors } from './pull-command.js'
import { runPullWatch } from './watch-command.js'

/**
 * `snapshot mirror --from ORIGIN --to RELAY`: a relay's copy of the store, verified as a replica
 * verifies it and written as `snapshot publish` writes (publish/mirror-store.ts). Once, or with
 * --watch following the origin as `pull --watch` does (long-poll, conditional polling, backoff,
 * SIGTERM after the pass in progress).
 */
export interface MirrorCommandOptions extends SourceFlags {
  from: string[]
  to: string
  pubkey: string[]
  token?: string
  retries: number
  timeout: number
  limitRate?: number
  concurrency: number
  delete?: boolean
  maxAge: number
  wait: number
  watch?: boolean
  interval: number
  longPoll: number
  maxBackoff: number
  json?: boolean
  quiet?: boolean
}

export async function mirrorCommand(opts: MirrorCommandOptions, out: Output): Promise<void> {
  if (opts.from.length === 0) throw new UsageError("required option '--from <url|dir>' not specified")
  const trust = await readTrustedKeys(opts.pubkey)
  if (!trust.checked) out.log('warning: no --pubkey given: the pointer is not authenticated, and the relay offers whatever the origin says')
  const to = await openDestination(opts)
  // Objects bound for a bucket wait on local disk between their check and their upload.
  const staging = to instanceof DirDestination ? null : await mkdtemp(join(tmpdir(), 'snapshot-mirror-'))
  const verified = new Set<string>()
  const once = async (): Promise<MirrorResult> => {
    const r = await mirrorOnce(opts, trust, to, staging ?? tmpdir(), verified, out)
    checkFreshness(r.latestCreated, opts.maxAge, Date.now(), r.latestParentCreated ?? null)
    return r
  }
  // While it follows the origin, the relay's server holds a replica's request for a file that a copy
  // about to begin may bring (http/mirror-hold.ts).
  let watching: HeldLock | null = null
  try {
    if (!opts.watch) return void (await once())
    if (to instanceof DirDestination) {
      await mkdir(to.root, { recursive: true })
      watching = announce(join(to.root, MIRROR_WATCH))
    }
    const flags = { from: opts.from, timeout: opts.timeout, interval: opts.interval, longPoll: opts.longPoll, maxBackoff: opts.maxBackoff, token: opts.token, quiet: opts.quiet ?? false, action: 'mirroring' }
    await runPullWatch(once, flags, out)
  } finally {
    watching?.release()
    to.close()
    if (staging) await rm(staging, { recursive: true, force: true })
  }
}

async function openDestination(opts: MirrorCommandOptions): Promise<StoreDestination> {
  if (isS3Url(opts.to)) {
    const location = parseS3Url(opts.to, '--to')
    // The AWS SDK takes ~0.25 s to load: only a mirror into a bucket pays for it.
    const [{ S3Destination }, { makeS3Client }] = await Promise.all([import('../publish/s3-destination.js'), import('../store/s3-client.js')])
    const client = makeS3Client({ ...s3Flags(opts), pathStyle: opts.pathStyle ?? false })
    return new S3Destination(client, location, { concurrency: opts.concurrency })
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(opts.to)) throw new UsageError(`--to ${opts.to}: expected a directory or s3://BUCKET/PREFIX`)
  const dest = new DirDestination(opts.to)
  for (const from of opts.from) {
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(from) && resolve(from) === dest.root) throw new UsageError(`--to ${opts.to} is also a --from: give the relay its own directory`)
  }
  return dest
}

async function mirrorOnce(opts: MirrorCommandOptions, trust: TrustedKeys, to: StoreDestination, stagingDir: string, verified: Set<string>, out: Output): Promise<MirrorResult> {
  const store = openStoreFromFlags(opts, trust, (l) => out.log(l))
  const { mirrorStore } = await import('../publish/mirror-store.js')
  const mirrored = await mirrorStore({ store, to, stagingDir, verified, concurrency: opts.concurrency, prune: opts.delete ?? true, lockWaitMs: opts.wait * 1000, log: (l) => out.log(l) })
  const mirrors = store.source instanceof MirroredSource ? store.source.reports : undefined
  const r = mirrors ? { ...mirrored, mirrors } : mirrored
  out.result(r, [
    `${r.uploaded.pointer ? 'mirrored' : 'up to date:'} snapshot ${r.id} from ${r.from} to ${r.to} in ${r.seconds.toFixed(2)} s: ${r.uploaded.objects} objects and ${r.uploaded.records} records copied (${formatBytes(r.uploaded.bytes)}), ${r.skipped} already there; pointer ${r.uploaded.pointer ? 'moved' : 'unchanged'}`,
    ...(r.deleted.length + r.held.length > 0 ? [`deleted ${r.deleted.length} files the origin's chain no longer names; kept ${r.held.length} that the relay's previous pointer still names`] : []),
    ...(mirrors ? describeMirrors(mirrors) : []),
  ])
  return r
}

export function registerMirrorCommand(program: Command): void {
  program
    .command('mirror')
    .description('Copy a store to a relay (a directory to serve, or an S3 prefix) as a replica trusts it: the pointer verified with --pubkey, every record and object checked against it, objects first and the pointer last, never backwards; with --watch, follow the origin. Replicas then name the relay first and the origin second.')
    .option('--from <url|dir>', 'the origin: an http(s):// or s3://BUCKET/PREFIX URL, or a store directory; repeat for mirrors (the newest valid pointer wins)', collect, [] as string[])
    .requiredOption('--to <dir|s3url>', 'the relay: a directory (serve it with `snapshot serve` or nginx) or s3://BUCKET/PREFIX')
    .addOption(pubkeyOption('trusted ed25519 public key of the master; repeat during a key rotation'))
    .addOption(tokenOption('send "Authorization: Bearer <token>" to the origin'))
    .option('--retries <n>', 'retries of a failed download, with backoff', wholeNumber('--retries', 0, 100), 5)
    .option('--timeout <seconds>', 'connect timeout, and how long a download may stall', wholeNumber('--timeout', 1, 3600), 30)
    .option('--limit-rate <rate>', 'download at most this many bytes per second per pass, e.g. 500k, 10M (k, M, G: 1024, 1024², 1024³; at least 16k)', checked(parseRate))
    .option('--concurrency <n>', 'downloads (and uploads) at once', wholeNumber('--concurrency', 1, 64), DEFAULT_CONCURRENCY)
    .option('--no-delete', 'keep what the origin\'s chain no longer names (default: deleted once the relay\'s previous pointer no longer names it either)')
    .addOption(waitOption('wait this long for another mirror into the same directory to finish (otherwise exit 11)'))
    .addOption(maxAgeOption('exit 13 (after copying) when the origin\'s newest snapshot is older than this: a stopped master; 0: never'))
    .option('--watch', 'keep running and copy each new snapshot as soon as it is published (long-poll against `snapshot serve`, else a conditional request every --interval)')
    .option('--interval <seconds>', 'with --watch: seconds between checks of an origin that does not long-poll', wholeNumber('--interval', 1, 86400), WATCH_DEFAULTS.intervalMs / 1000)
    .option('--long-poll <seconds>', 'with --watch: how long `snapshot serve` may hold a check; 0: plain polling', wholeNumber('--long-poll', 0, 3600), 30)
    .option('--max-backoff <seconds>', 'with --watch: cap of the retry delay while the origin is unreachable or passes fail', wholeNumber('--max-backoff', 1, 86400), WATCH_DEFAULTS.backoffMaxMs / 1000)
    .option('--endpoint <url>', 'with s3:// (--from or --to): an S3-compatible endpoint; default: AWS')
    .option('--region <region>', 'with s3://: the bucket\'s region (default: AWS_REGION, the profile\'s, or us-east-1 with --endpoint)')
    .option('--path-style', 'with s3://: path-style URLs (ENDPOINT/BUCKET/KEY)')
    .addOption(jsonOption('print one JSON object (with --watch: one per pass)'))
    .addOption(quietOption())
    .action(async (o) => mirrorCommand(o as MirrorCommandOptions, makeOutput(o)))
}
