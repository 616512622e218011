import { DEFAULT_FULL_POLICY } from '../core/full-policy.js'
import { buildSnapshot } from '../master/build.js'
import { DEFAULT_GRACE_SECONDS } from '../master/prune.js'
import { readPrivateKeyFile } from './keys.js'
import { formatBytes, type Output } from './output.js'
import { describePrune } from './prune-command.js'
import { parseS3Url } from '../store/s3-location.js'
import { describePublish, publishTo, type PublishTargetOptions } from './publish-command.js'
import { runOnSchedule, type ScheduleFlags } from './scheduler.js'

export interface BuildCommandOptions extends Partial<ScheduleFlags>, PublishTargetOptions {
  source: string
  store: string
  key?: string
  full?: boolean
  json?: boolean
  fullRatio?: number
  maxChain?: number
  /** Prune to this many snapshots after each build (see `snapshot prune`); absent: keep all. */
  keep?: number
  grace?: number
  /** s3://BUCKET/PREFIX: publish the store there after each build (unchanged ones too: a failed publish is retried). */
  publish?: string
}

/** With --cron, keeps running and builds on the schedule; otherwise builds once. */
export async function buildCommand(opts: BuildCommandOptions, out: Output): Promise<void> {
  const cron = opts.cron
  if (cron !== undefined) return runOnSchedule(() => buildOnce(opts, out), { ...opts, cron }, out)
  await buildOnce(opts, out)
}

async function buildOnce(opts: BuildCommandOptions, out: Output): Promise<void> {
  if (opts.publish) parseS3Url(opts.publish, '--publish') // a typo is a usage error before the build, not after
  const privateKey = opts.key ? await readPrivateKeyFile(opts.key) : null
  if (!privateKey) out.log('warning: no --key given: the snapshot is unsigned and replicas with --pubkey will refuse it')
  const r = await buildSnapshot({
    source: opts.source,
    store: opts.store,
    privateKey,
    forceFull: opts.full ?? false,
    policy: { deltaBytesRatio: opts.fullRatio ?? DEFAULT_FULL_POLICY.deltaBytesRatio, maxChain: opts.maxChain ?? DEFAULT_FULL_POLICY.maxChain },
    log: (l) => out.log(l),
    ...(opts.keep !== undefined ? { keep: opts.keep, graceMs: (opts.grace ?? DEFAULT_GRACE_SECONDS) * 1000 } : {}),
  })
  const human = r.created
    ? [
        `snapshot ${r.id} (${r.kind}${r.parent !== null ? `, parent ${r.parent}` : ''}): ${r.changed} changed, ${r.deleted} deleted, ${r.filesRead} files read in ${r.seconds.toFixed(2)} s`,
        `tree: ${r.files} files, ${r.dirs} directories, ${r.links} symlinks, ${formatBytes(r.bytes)}`,
        ...(r.deltaBytes !== null ? [`delta: ${formatBytes(r.deltaBytes)}`] : []),
        ...(r.fullBytes !== null ? [`full: ${formatBytes(r.fullBytes)} (${r.fullReason})`] : []),
      ]
    : [`unchanged: the tree equals snapshot ${r.id}; no new snapshot (${r.seconds.toFixed(2)} s)`]
  if (r.pruned) human.push(...describePrune(r.pruned).map((l) => `prune: ${l}`))
  const published = opts.publish
    ? await publishTo(opts.store, opts.publish, opts, out, '--publish').catch((err: unknown) => {
        out.log(`snapshot ${r.id} is in the store, but publishing it failed; the next build (or \`snapshot publish\`) sends what is missing`)
        throw err
      })
    : null
  if (published) human.push(...describePublish(published).map((l) => `publish: ${l}`))
  out.result(published ? { ...r, published } : r, human)
}
