/**
 * The pointer bytes this process last received from each URL, with the ETag they came with. A
 * `pull --watch` learns of a publication by a long-poll that already carried the new pointer; the
 * pull that follows asks for it again (every mirror is asked: the newest wins) with
 * If-None-Match, and a 304 stands for the bytes remembered here. Across an ocean that is a few
 * hundred bytes instead of the pointer (which grows with the chain) for each replica every hour.
 * The bytes are verified by whoever uses them, as any pointer is; a handful of URLs at most.
 */
const MAX_URLS = 32
const memo = new Map<string, { etag: string; bytes: Buffer }>()

/** The key of a pointer URL: without its query (a long-poll's `?wait=`), credentials or fragment. */
function keyOf(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`
}

export function rememberPointer(url: URL, etag: string | undefined, bytes: Buffer): void {
  const key = keyOf(url)
  memo.delete(key)
  if (etag === undefined || etag === '' || etag.startsWith('W/')) return // a weak ETag does not promise the same bytes
  memo.set(key, { etag, bytes })
  if (memo.size > MAX_URLS) memo.delete(memo.keys().next().value!)
}

export function rememberedPointer(url: URL): { etag: string; bytes: Buffer } | undefined {
  return memo.get(keyOf(url))
}
