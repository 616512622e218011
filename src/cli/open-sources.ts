import { UsageError } from '../core/errors.js'
import { MirroredSource } from '../store/mirrored-source.js'
import type { SourceOptions } from '../store/object-source.js'
import { RateLimiter } from '../store/rate-limit.js'
import { openSource } from '../store/open-source.js'
import type { S3ConnectOptions } from '../store/s3-client.js'
import { StoreClient } from '../store/store-client.js'
import type { TrustedKeys } from '../store/trusted-keys.js'

/** `--from` given once: that source; given several times: the mirrors as one failover source. Read under `--pubkey`'s keys. */
export interface SourceFlags {
  endpoint?: string
  region?: string
  pathStyle?: boolean
}

export function openStore(
  froms: readonly string[],
  opts: SourceOptions & SourceFlags,
  reading: { trust: TrustedKeys; pointerTimeoutMs: number; log?: (line: string) => void },
): StoreClient {
  if (froms.length === 0) throw new UsageError("required option '--from <url|dir>' not specified")
  const s3: S3ConnectOptions = {
    ...(opts.endpoint !== undefined ? { endpoint: opts.endpoint } : {}),
    ...(opts.region !== undefined ? { region: opts.region } : {}),
    pathStyle: opts.pathStyle ?? false,
  }
  const { endpoint: _e, region: _r, pathStyle: _p, ...sourceOpts } = opts
  const open = (from: string, extra: SourceOptions = {}) => openSource(from, { ...sourceOpts, ...extra, s3 })
  if (froms.length === 1) return new StoreClient(open(froms[0]!), reading.trust)
  if (new Set(froms).size !== froms.length) throw new UsageError('--from: the same mirror is given twice')
  const mirrors = new MirroredSource(
    froms.map((from) => ({
      source: open(from),
      quick: open(from, { retries: Math.min(1, opts.retries ?? 1) }),
      // One retry for the pointer: a dead mirror must not hold the pull for the whole backoff.
      probe: (signal: AbortSignal) => open(from, { retries: Math.min(1, opts.retries ?? 1), signal }),
    })),
    { trust: reading.trust, pointerTimeoutMs: reading.pointerTimeoutMs, ...(reading.log ? { log: reading.log } : {}) },
  )
  return new StoreClient(mirrors, reading.trust)
}

/** The download flags `pull` and `mirror` share (their options are declared by each command). */
export interface DownloadFlags extends SourceFlags {
  from: string[]
  token?: string
  retries: number
  timeout: number
  limitRate?: number
}

/** The store that `--from` names, read under `trust` with the command's download flags. */
export function openStoreFromFlags(opts: DownloadFlags, trust: TrustedKeys, log: (line: string) => void): StoreClient {
  const token = opts.token
  return openStore(
    opts.from,
    {
      ...(token ? { token } : {}),
      retries: opts.retries,
      timeoutMs: { connect: opts.timeout * 1000, idle: opts.timeout * 1000 },
      ...(opts.limitRate ? { limiter: new RateLimiter(opts.limitRate) } : {}),
      ...s3Flags(opts),
    },
    { trust, pointerTimeoutMs: opts.timeout * 1000, log },
  )
}

/** Only the S3 flags that were given. */
export function s3Flags(o: SourceFlags): SourceFlags {
  return { ...(o.endpoint !== undefined ? { endpoint: o.endpoint } : {}), ...(o.region !== undefined ? { region: o.region } : {}), ...(o.pathStyle ? { pathStyle: true } : {}) }
}
