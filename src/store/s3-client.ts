import { GetObjectCommand, ListObjectsV2Command, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3'
import { NetworkError, SnapshotError, TooLargeError, UsageError } from '../core/errors.js'
import { describeS3, s3Key, type S3Location } from './s3-location.js'

/**
 * The one place that makes an S3 client and turns the SDK's errors into ours. Credentials come
 * from the SDK's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
 * AWS_PROFILE and ~/.aws, web identity, the ECS or EC2 instance role): none is ever a flag.
 */
export interface S3ConnectOptions {
  /** An S3-compatible endpoint (MinIO, Ceph RGW, R2, ...); absent: AWS itself. */
  readonly endpoint?: string
  /** Absent: AWS_REGION / AWS_DEFAULT_REGION / the profile's; us-east-1 for a custom endpoint. */
  readonly region?: string
  /** Path-style URLs (endpoint/BUCKET/KEY): what most S3-compatible stores want. */
  readonly pathStyle?: boolean
  /** SDK attempts per request (it retries throttling, 5xx and network errors itself, with backoff). */
  readonly maxAttempts?: number
  readonly timeoutMs?: { connect: number; idle: number }
}

export function makeS3Client(opts: S3ConnectOptions): S3Client {
  if (opts.endpoint !== undefined && !/^https?:\/\/[^/]+/i.test(opts.endpoint)) {
    throw new UsageError(`--endpoint ${opts.endpoint}: expected an http(s):// URL`)
  }
  // On Node 20 the SDK prints nine lines on every run about its releases from 2027 needing Node
  // 22 (the README says so once); a cron job's log is not the place. Set it to "false" to see it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
  const region = opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? (opts.endpoint ? 'us-east-1' : undefined)
  const config: S3ClientConfig = {
    ...(region ? { region } : {}),
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    forcePathStyle: opts.pathStyle ?? false,
    maxAttempts: opts.maxAttempts ?? 5,
    // Objects are named by their sha256 and checked against the signed pointer on every read,
    // and every PUT's payload hash is signed: the SDK's extra CRC32 checksums add nothing, and
    // S3-compatible stores that predate them (2025) store the aws-chunked framing as data.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...(opts.timeoutMs ? { requestHandler: { connectionTimeout: opts.timeoutMs.connect, requestTimeout: opts.timeoutMs.idle } } : {}),
  }
  return new S3Client(config)
}

/** The SDK error's name (NoSuchKey, AccessDenied, ...), its HTTP status, and a message. */
function sdkDetail(err: unknown): { name: string; status: number | undefined; message: string } {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number }; code?: string }
  return { name: e?.name ?? 'Error', status: e?.$metadata?.httpStatusCode, message: e?.message ?? String(err) }
}

export function isNotFound(err: unknown): boolean {
  const d = sdkDetail(err)
  return d.name === 'NoSuchKey' || d.name === 'NotFound' || d.status === 404
}

const AUTH_ERRORS = new Set(['AccessDenied', 'SignatureDoesNotMatch', 'InvalidAccessKeyId', 'ExpiredToken', 'InvalidToken', 'CredentialsProviderError', 'AuthorizationHeaderMalformed'])

/** An SDK failure as one of our errors: exit 4 (network) with what to check, 2 for a missing region. */
export function s3Failure(err: unknown, what: string): SnapshotError {
  if (err instanceof SnapshotError) return err
  const d = sdkDetail(err)
  if (/region is missing/i.test(d.message)) return new UsageError(`${what}: no region: give --region or set AWS_REGION`, { cause: err })
  const hint = AUTH_ERRORS.has(d.name) || d.status === 403 ? ' (check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the instance role, and the bucket policy)' : ''
  const status = d.status ? ` (HTTP ${d.status})` : ''
  return new NetworkError(`${what}: ${d.name}: ${d.message}${status}${hint}`, { cause: err })
}

/** Every key under the location's prefix with its size, relative to the prefix, one page of ListObjectsV2 at a time. */
export async function listRemote(client: S3Client, loc: S3Location, opts: { pageSize?: number; maxPages?: number } = {}): Promise<Map<string, number>> {
  const found = new Map<string, number>()
  let token: string | undefined
  const maxPages = opts.maxPages ?? 1_000_000 // a bucket that pages forever is a bug of the server's, not a reason to hang
  for (let page = 0; page < maxPages; page++) {
    let out
    try {
      out = await client.send(new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: loc.prefix, ...(opts.pageSize ? { MaxKeys: opts.pageSize } : {}), ...(token ? { ContinuationToken: token } : {}) }))
    } catch (err) {
      throw s3Failure(err, `listing ${describeS3(loc)}`)
    }
    for (const o of out.Contents ?? []) {
      if (o.Key?.startsWith(loc.prefix)) found.set(o.Key.slice(loc.prefix.length), o.Size ?? 0)
    }
    if (!out.IsTruncated) return found
    token = out.NextContinuationToken
    if (!token) throw new NetworkError(`listing ${describeS3(loc)}: the server said the listing goes on but gave no continuation token`)
  }
  throw new NetworkError(`listing ${describeS3(loc)}: more than ${maxPages} pages`)
}

/** A small object (the pointer, a record), read whole but never beyond maxBytes; null when absent. */
export async function getSmallObject(client: S3Client, loc: S3Location, relPath: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer | null> {
  const what = describeS3(loc, relPath)
  let out
  try {
    out = await client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: s3Key(loc, relPath) }), signal ? { abortSignal: signal } : {})
  } catch (err) {
    if (isNotFound(err)) return null
    throw s3Failure(err, `reading ${what}`)
  }
  const body = out.Body as AsyncIterable<Uint8Array> | undefined
  if (out.ContentLength !== undefined && out.ContentLength > maxBytes) {
    ;(out.Body as { destroy?: () => void } | undefined)?.destroy?.()
    throw new TooLargeError(what, maxBytes)
  }
  const parts: Buffer[] = []
  let total = 0
  try {
    for await (const chunk of body ?? []) {
      total += chunk.length
      if (total > maxBytes) throw new TooLargeError(what, maxBytes)
      parts.push(Buffer.from(chunk))
    }
  } catch (err) {
    ;(out.Body as { destroy?: () => void } | undefined)?.destroy?.()
    throw s3Failure(err, `reading ${what}`)
  }
  return Buffer.concat(parts, total)
}
