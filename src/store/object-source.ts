/**
 * The seam through which everything that reads a store gets its bytes: a directory
 * (dir-source.ts), an http(s) URL (http-source.ts) or a bucket (s3-source.ts), opened by
 * open-source.ts, several of them as mirrors (mirrored-source.ts). Every source hands over an
 * immutable object only once its length and sha256 equal what the signed pointer declares, and
 * never accepts more bytes than declared (endless-data attack). What the bytes mean (signatures,
 * records, the walk back through parents) is the store client's (store-client.ts).
 */
import { UnsafeArchiveError } from '../core/errors.js'
import type { RateLimiter } from './rate-limit.js'

export interface ObjectSource {
  /** The URL (password hidden) or directory, for messages. */
  readonly description: string
  /** Small mutable files (latest.json, snapshots/<id>.json): fetched fresh (no cache), refused if larger than maxBytes. Returns null on 404 / ENOENT. */
  getSmall(relPath: string, maxBytes: number): Promise<Buffer | null>
  /**
   * Immutable object: lands at `dest` only if its length and sha256 equal the expected ones.
   * `progress` gets the bytes of this object on disk so far (back to 0 if a download restarts).
   */
  fetchObject(relPath: string, dest: string, expect: ObjectExpectation, progress?: (bytes: number) => void): Promise<void>
}

export interface ObjectExpectation {
  sha256: string
  length: number
  /**
   * Flush the file to disk before it takes its name (default true). False where whoever reads it
   * hashes it first, so a crash can cost a download, never a wrong byte: the replica's object
   * cache; a relay, which flushes its objects itself before any record or pointer names them, and
   * lets its replicas have each one the moment it lands (http/mirror-hold.ts).
   */
  flush?: boolean
}

export interface SourceOptions {
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string
  /** `idle`: no bytes for this long is a stall, aborted and retried. Defaults 10 s and 30 s. */
  timeoutMs?: { connect: number; idle: number }
  /** Retries after the first attempt, on network errors, stalls, 408, 429 and 5xx. Default 5. */
  retries?: number
  /** First backoff; it doubles per retry, with jitter, up to 10 s. Default 500 ms. */
  retryBaseMs?: number
  signal?: AbortSignal
  /** `--limit-rate`: every body byte counts against it, over all objects, retries and resumes. */
  limiter?: RateLimiter
}

/**
 * Store paths come from signed manifests, but are still only ever plain relative segments:
 * nothing absolute, no `..`, no dot-files, nothing that a URL or a path would read differently.
 */
export function checkRelPath(relPath: string): string[] {
  const segments = relPath.split('/')
  if (relPath === '' || !segments.every((s) => /^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$/.test(s))) {
    throw new UnsafeArchiveError(`refusing the store path ${JSON.stringify(relPath)}: expected plain relative segments (no .., no absolute path)`)
  }
  return segments
}
