import { UsageError } from '../core/errors.js'
import { MirroredSource } from '../store/mirrored-source.js'
import type { SourceOptions } from '../store/object-source.js'
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
      // One retry for the pointer: a dead mirror must not hold the pull for the whole backoff.
      probe: (signal: AbortSignal) => open(from, { retries: Math.min(1, opts.retries ?? 1), signal }),
    })),
    { trust: reading.trust, pointerTimeoutMs: reading.pointerTimeoutMs, ...(reading.log ? { log: reading.log } : {}) },
  )
  return new StoreClient(mirrors, reading.trust)
}
