/**
 * What a request to the store's static server asks, and the headers of the answer: pure functions
 * of the request's target and headers and of the file's stat, so they are tested without a server
 * (static-server.ts does the I/O). Only paths a store holds are served; ranges are single byte
 * ranges; ETag, If-None-Match, If-Modified-Since and If-Range follow RFC 9110.
 */
import type { BigIntStats } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'

/** Sent with every long-poll answer the server held or could have held: its value is the seconds granted. */
export const LONG_POLL_HEADER = 'Snapshot-Long-Poll'

const IMMUTABLE = 'public, max-age=31536000, immutable'
const NO_CACHE = 'no-cache, max-age=0'
const SEGMENT = /^[A-Za-z0-9._-]+$/
const MAX_SEGMENTS = 8
const MAX_SEGMENT_LENGTH = 255
const OBJECT_NAME = /^[0-9a-f]{64}\.[A-Za-z0-9.]+$/
/** What a store holds for replicas (store-layout.ts, docs/FORMAT.md): nothing else is ever served. */
export const SERVED_OBJECT = /^[0-9a-f]{64}\.(tar|manifest)\.zst$/
const SERVED_RECORD = /^(0|[1-9][0-9]{0,15})\.json$/

export type PathResult =
  | { kind: 'ok'; segments: string[] }
  | { kind: 'bad-request'; reason: string }
  | { kind: 'not-found'; reason: string }

/** A segment that exists in the charset but is never served: dot-names and key files. */
export function isHiddenSegment(segment: string): boolean {
  return segment.startsWith('.') || segment.endsWith('.key')
}

/**
 * Turns a raw request target into store-relative segments, or says why not. Each raw segment is
 * decoded on its own, so `%2f`, `%5c`, `%00` and `%2e%2e` cannot change the path's shape; the
 * decoded segment must match a conservative charset, which also excludes `\`, NUL and spaces.
 */
export function parseRequestPath(target: string): PathResult {
  const q = target.indexOf('?')
  const path = q === -1 ? target : target.slice(0, q)
  if (!path.startsWith('/')) return { kind: 'bad-request', reason: 'not an origin-form path' }
  if (path === '/') return { kind: 'not-found', reason: 'no index' }
  const raw = path.slice(1).split('/')
  if (raw.length > MAX_SEGMENTS) return { kind: 'bad-request', reason: 'too many segments' }
  const segments: string[] = []
  let hidden = false
  for (const r of raw) {
    if (r === '') return { kind: 'bad-request', reason: 'empty segment' }
    let s: string
    try {
      s = decodeURIComponent(r)
    } catch {
      return { kind: 'bad-request', reason: 'invalid percent-encoding' }
    }
    if (s.length > MAX_SEGMENT_LENGTH || !SEGMENT.test(s)) {
      return { kind: 'bad-request', reason: 'forbidden characters' }
    }
    if (isHiddenSegment(s)) hidden = true
    segments.push(s)
  }
  // Checked after the whole path so `/.state/%ZZ` is still a 400, not a hint that .state exists.
  if (hidden) return { kind: 'not-found', reason: 'hidden path' }
  if (!isServedPath(segments)) return { kind: 'not-found', reason: 'not a path a store holds' }
  return { kind: 'ok', segments }
}

/**
 * The only paths a store holds for replicas: `latest.json`, `snapshots/<id>.json` and
 * `objects/<sha256>.(tar|manifest).zst`. A stray file (a key renamed, a backup, notes) is never
 * served, whatever its name.
 */
export function isServedPath(segments: readonly string[]): boolean {
  if (segments.length === 1) return segments[0] === 'latest.json'
  if (segments.length !== 2) return false
  const [dir, name] = segments as [string, string]
  return (dir === 'objects' && SERVED_OBJECT.test(name)) || (dir === 'snapshots' && SERVED_RECORD.test(name))
}

export type RangeResult =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' }

/**
 * RFC 9110 single byte range. A header we do not understand, or a multi-range, is ignored (full
 * 200, which the RFC allows); a well-formed range that misses the file is unsatisfiable (416).
 */
export function parseByteRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' }
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (!m) return { kind: 'full' }
  const [, first = '', last = ''] = m
  if (first === '' && last === '') return { kind: 'full' }
  if (first === '') {
    const suffix = Number(last)
    if (!Number.isSafeInteger(suffix)) return { kind: 'full' }
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  if (!Number.isSafeInteger(start)) return { kind: 'full' }
  let end = size - 1
  if (last !== '') {
    const requested = Number(last)
    if (!Number.isSafeInteger(requested)) return { kind: 'full' }
    if (requested < start) return { kind: 'full' } // invalid range-spec: ignore the header
    end = Math.min(requested, size - 1)
  }
  if (start >= size) return { kind: 'unsatisfiable' }
  return { kind: 'partial', start, end }
}

/** Strong validator from inode, size and mtime in nanoseconds: changes whenever the file does. */
export function etagFor(st: Pick<BigIntStats, 'ino' | 'size' | 'mtimeNs'>): string {
  return `"${st.ino.toString(36)}-${st.size.toString(36)}-${st.mtimeNs.toString(36)}"`
}

/** If-None-Match uses the weak comparison: `W/"x"` matches `"x"`. */
export function ifNoneMatchHits(header: string, etag: string): boolean {
  const strip = (t: string): string => (t.startsWith('W/') ? t.slice(2) : t)
  return header.split(',').some((t) => {
    const tag = t.trim()
    return tag === '*' || strip(tag) === strip(etag)
  })
}

/**
 * The wait a request asks for, in ms: only a GET of the root `latest.json` with `?wait=S` (whole
 * seconds) and an If-None-Match can be held; anything else, or a malformed hint, is 0 (answered
 * at once, as a static host would).
 */
export function longPollWaitMs(method: string, target: string, segments: readonly string[], ifNoneMatch: string | undefined, maxMs: number): number {
  if (method !== 'GET' || ifNoneMatch === undefined || segments.length !== 1 || segments[0] !== 'latest.json') return 0
  const q = target.indexOf('?')
  if (q === -1) return 0
  const wait = new URLSearchParams(target.slice(q + 1)).get('wait')
  if (wait === null || !/^\d{1,6}$/.test(wait)) return 0
  return Math.min(Number(wait) * 1000, maxMs)
}

export function contentTypeFor(name: string): string {
  if (name.endsWith('.json')) return 'application/json'
  if (name.endsWith('.zst')) return 'application/zstd'
  return 'application/octet-stream'
}

/** Only content-named files may be cached forever; everything else is revalidated. */
export function cacheControlFor(segments: readonly string[]): string {
  const [dir, name, ...rest] = segments
  if (rest.length === 0 && name !== undefined) {
    if (dir === 'objects' && OBJECT_NAME.test(name)) return IMMUTABLE
    if (dir === 'snapshots' && name.endsWith('.json')) return IMMUTABLE
  }
  return NO_CACHE
}

// ---------------------------------------------------------------------------------------------
// Startup check

/**

/** If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2). */
export function notModified(headers: IncomingHttpHeaders, etag: string, mtimeMs: number): boolean {
  const inm = headers['if-none-match']
  if (inm !== undefined) return ifNoneMatchHits(inm, etag)
  const ims = headers['if-modified-since']
  if (ims === undefined) return false
  const since = Date.parse(ims)
  if (Number.isNaN(since)) return false
  return Math.floor(mtimeMs / 1000) * 1000 <= since
}

/** The range to answer: Range is defined for GET only; If-Range must name this exact version (strong compare). */
export function rangeToServe(method: string, headers: IncomingHttpHeaders, etag: string, size: number): RangeResult {
  const ifRange = headers['if-range']
  const rangeHeader = method === 'GET' && (ifRange === undefined || ifRange === etag) ? headers.range : undefined
  return parseByteRange(rangeHeader, size)
}

/** The validators and caching headers every answer about a file carries, 304 included. */
export function fileHeaders(segments: readonly string[], st: Pick<BigIntStats, 'ino' | 'size' | 'mtimeNs' | 'mtimeMs'>): Record<string, string> {
  return {
    ETag: etagFor(st),
    'Last-Modified': new Date(Number(st.mtimeMs)).toUTCString(),
    'Cache-Control': cacheControlFor(segments),
    'Accept-Ranges': 'bytes',
    'X-Content-Type-Options': 'nosniff',
  }
}

/** What a 200 or 206 sends: the status, the bytes [start, end] of the file, and the body's headers. */
export interface BodyPlan {
  status: 200 | 206
  start: number
  end: number
  length: number
  headers: Record<string, string | number>
}

export function bodyPlan(range: Exclude<RangeResult, { kind: 'unsatisfiable' }>, size: number, name: string): BodyPlan {
  const start = range.kind === 'partial' ? range.start : 0
  const end = range.kind === 'partial' ? range.end : size - 1
  const length = end - start + 1
  const headers: Record<string, string | number> = { 'Content-Type': contentTypeFor(name), 'Content-Length': length }
  if (range.kind === 'partial') headers['Content-Range'] = `bytes ${start}-${end}/${size}`
  return { status: range.kind === 'partial' ? 206 : 200, start, end, length, headers }
}

/** The headers of a 416: the size, so a client can ask again. */
export function unsatisfiableHeaders(size: number): Record<string, string | number> {
  return { 'Content-Range': `bytes */${size}`, 'Content-Length': 0 }
}
