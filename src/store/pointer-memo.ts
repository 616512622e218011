/**
 * The pointer bytes this process last received from each URL, with the ETag they came with. A
 * `pull --watch` (or `mirror --watch`) learns of a publication by a long-poll that already
 * carried the new pointer; the pull that follows asks for it again (every mirror is asked: the
 * newest wins). Received within the last second, the bytes are taken as they are: no request,
 * so the objects are asked for one round trip sooner (across an ocean, 160 ms of every hour).
 * Older, they are asked for with If-None-Match, and a 304 stands for them: a few hundred bytes
 * instead of the pointer, which grows with the chain. The bytes are verified by whoever uses
 * them, as any pointer is; a publication missed within that second is the watch's next check's.
 */
const MAX_URLS = 32
/** How long bytes just received stand for the pointer without asking again. */
export const POINTER_FRESH_MS = 1000
const memo = new Map<string, { etag: string; bytes: Buffer; at: number }>()

/** The key of a pointer URL: without its query (a long-poll's `?wait=`), credentials or fragment. */
function keyOf(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`
}

export function rememberPointer(url: URL, etag: string | undefined, bytes: Buffer): void {
  const key = keyOf(url)
  memo.delete(key)
  if (etag === undefined || etag === '' || etag.startsWith('W/')) return // a weak ETag does not promise the same bytes
  memo.set(key, { etag, bytes, at: performance.now() })
  if (memo.size > MAX_URLS) memo.delete(memo.keys().next().value!)
}

/** A request for the pointer failed: what was received from that URL no longer says it is up. */
export function forgetPointer(url: URL): void {
  memo.delete(keyOf(url))
}

export function rememberedPointer(url: URL): { etag: string; bytes: Buffer; fresh: boolean } | undefined {
  const known = memo.get(keyOf(url))
  return known && { etag: known.etag, bytes: known.bytes, fresh: performance.now() - known.at < POINTER_FRESH_MS }
}
