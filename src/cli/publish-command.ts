import type { Command } from '@commander-js/extra-typings'
import { DEFAULT_CONCURRENCY } from '../publish/publish-plan.js'
import type { PublishResult } from '../publish/publish-store.js'
import { isS3Url, parseS3Url } from '../store/s3-location.js'
import { wholeNumber } from './option-parsers.js'
import { formatBytes, makeOutput, type Output } from './output.js'

/** Where and how to publish: shared by `snapshot publish` and `snapshot build --publish`. */
export interface PublishTargetOptions {
  endpoint?: string
  region?: string
  pathStyle?: boolean
  concurrency?: number
  delete?: boolean
  force?: boolean
}

export interface PublishCommandOptions extends PublishTargetOptions {
  store: string
  to: string
  json?: boolean
  quiet?: boolean
}

export async function publishCommand(opts: PublishCommandOptions, out: Output): Promise<void> {
  const r = await publishTo(opts.store, opts.to, opts, out)
  out.result(r, describePublish(r))
}

export async function publishTo(store: string, to: string, opts: PublishTargetOptions, out: Output, flag = '--to'): Promise<PublishResult> {
  if (!isS3Url(to) && !/^[a-z][a-z0-9+.-]*:\/\//i.test(to)) {
    // A directory (another disk, an nginx root): the same order and prune, written durably.
    const [{ publishStore }, { DirDestination }] = await Promise.all([import('../publish/publish-store.js'), import('../publish/dir-destination.js')])
    return publishStore({ store, destination: new DirDestination(to), concurrency: opts.concurrency ?? DEFAULT_CONCURRENCY, prune: opts.delete ?? true, force: opts.force ?? false, log: (l) => out.log(l) })
  }
  const location = parseS3Url(to, flag)
  // The AWS SDK takes ~0.25 s to load: only the commands that reach S3 pay for it.
  const [{ publishStore }, { makeS3Client }] = await Promise.all([import('../publish/publish-store.js'), import('../store/s3-client.js')])
  const client = makeS3Client({
    ...(opts.endpoint !== undefined ? { endpoint: opts.endpoint } : {}),
    ...(opts.region !== undefined ? { region: opts.region } : {}),
    pathStyle: opts.pathStyle ?? false,
  })
  try {
    return await publishStore({
      store,
      to: location,
      client,
      concurrency: opts.concurrency ?? DEFAULT_CONCURRENCY,
      prune: opts.delete ?? true,
      force: opts.force ?? false,
      log: (l) => out.log(l),
    })
  } finally {
    client.destroy()
  }
}

export function describePublish(r: PublishResult): string[] {
  return [
    `published snapshot ${r.id} to ${r.to} in ${r.seconds.toFixed(2)} s: ${r.uploaded.objects} objects and ${r.uploaded.records} records sent (${formatBytes(r.uploaded.bytes)}), ${r.skipped} already there; pointer ${r.uploaded.pointer ? 'moved' : 'unchanged'}`,
    ...(r.deleted.length + r.held.length > 0 ? [`deleted ${r.deleted.length} keys the store no longer has; kept ${r.held.length} that a pointer still names`] : []),
  ]
}

/** The flags that reach an S3-compatible store, for `--from s3://...` on the replica side. */
export function addSourceS3Options<C extends Command<any, any, any>>(cmd: C): C {
  return cmd
    .option('--endpoint <url>', 'with --from s3://: an S3-compatible endpoint; default: AWS')
    .option('--region <region>', 'with --from s3://: the bucket\'s region (default: AWS_REGION, the profile\'s, or us-east-1 with --endpoint)')
    .option('--path-style', 'with --from s3://: path-style URLs (ENDPOINT/BUCKET/KEY)') as C
}

/** The S3 flags, on `publish` and on `build` (for --publish). */
export function addS3Options<C extends Command<any, any, any>>(cmd: C): C {
  return cmd
    .option('--endpoint <url>', 'an S3-compatible endpoint (MinIO, Ceph RGW, R2...); default: AWS')
    .option('--region <region>', 'the bucket\'s region (default: AWS_REGION, the profile\'s, or us-east-1 with --endpoint)')
    .option('--path-style', 'path-style URLs (ENDPOINT/BUCKET/KEY), as most S3-compatible stores want')
    .option('--concurrency <n>', 'uploads at once', wholeNumber('--concurrency', 1, 64), DEFAULT_CONCURRENCY)
    .option('--no-delete', 'do not delete from the bucket what the store no longer has') as C
}

export function registerPublishCommand(program: Command): void {
  const cmd = program
    .command('publish')
    .description('Mirror a store into an S3 bucket (or a directory): objects first, then records, then latest.json last, so readers never see a pointer before what it names; only what the bucket lacks is sent, and after a prune what the store no longer has is deleted once the pointer has moved. Credentials: the AWS SDK\'s default chain.')
    .requiredOption('--store <dir>', 'the store directory')
    .requiredOption('--to <s3url|dir>', 's3://BUCKET/PREFIX, or a directory')
  addS3Options(cmd)
    .option('--force', 'publish even when the bucket\'s pointer names a newer snapshot than the store\'s')
    .option('--json', 'print one JSON object')
    .option('--quiet', 'no progress lines on stderr')
    .action(async (o) => publishCommand(o as PublishCommandOptions, makeOutput(o as { json?: boolean; quiet?: boolean })))
}
