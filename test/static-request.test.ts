import assert from 'node:assert/strict'
import test from 'node:test'
import { bodyPlan, cacheControlFor, etagFor, fileHeaders, notModified, parseByteRange, parseRequestPath, rangeToServe } from '../src/http/static-request.js'

const st = { ino: 42n, size: 1000n, mtimeNs: 1_795_257_700_631_351_881n, mtimeMs: 1_795_257_700_631n }
const etag = etagFor(st)

test('parseByteRange handles the three single-range forms and the edge cases', () => {
  assert.deepEqual(parseByteRange(undefined, 10), { kind: 'full' })
  assert.deepEqual(parseByteRange('bytes=2-5', 10), { kind: 'partial', start: 2, end: 5 })
  assert.deepEqual(parseByteRange('bytes=2-500', 10), { kind: 'partial', start: 2, end: 9 })
  assert.deepEqual(parseByteRange('bytes=7-', 10), { kind: 'partial', start: 7, end: 9 })
  assert.deepEqual(parseByteRange('bytes=-3', 10), { kind: 'partial', start: 7, end: 9 })
  assert.deepEqual(parseByteRange('bytes=-30', 10), { kind: 'partial', start: 0, end: 9 })
  assert.deepEqual(parseByteRange('bytes=10-', 10), { kind: 'unsatisfiable' })
  assert.deepEqual(parseByteRange('bytes=-0', 10), { kind: 'unsatisfiable' })
  assert.deepEqual(parseByteRange('bytes=0-', 0), { kind: 'unsatisfiable' })
  assert.deepEqual(parseByteRange('bytes=5-2', 10), { kind: 'full' })
  assert.deepEqual(parseByteRange('bytes=0-1,4-5', 10), { kind: 'full' })
  assert.deepEqual(parseByteRange('items=0-1', 10), { kind: 'full' })
  assert.deepEqual(parseByteRange('bytes=-', 10), { kind: 'full' })
  assert.deepEqual(parseByteRange('bytes=99999999999999999999-', 10), { kind: 'full' })
})

test('parseRequestPath accepts store paths and rejects every traversal spelling', () => {
  assert.deepEqual(parseRequestPath('/latest.json'), { kind: 'ok', segments: ['latest.json'] })
  assert.deepEqual(parseRequestPath(`/objects/${'ab'.repeat(32)}.tar.zst?x=1`), {
    kind: 'ok',
    segments: ['objects', `${'ab'.repeat(32)}.tar.zst`],
  })
  assert.deepEqual(parseRequestPath('/snapshots/12.json'), { kind: 'ok', segments: ['snapshots', '12.json'] })
  // Only what a store holds: anything else is 404, whatever it is called.
  for (const p of ['/objects/ab_c-1.tar.zst', '/objects/k.KEY', '/objects/sub/renamed.pem', `/objects/${'AB'.repeat(32)}.tar.zst`,
    `/objects/${'ab'.repeat(32)}.tar.zst.bak`, `/objects/${'ab'.repeat(32)}.exe.zst`, '/snapshots/x.json', '/snapshots/01.json', '/notes.txt', '/latest.json.bak']) {
    assert.equal(parseRequestPath(p).kind, 'not-found', p)
  }
  for (const p of ['/..', '/.state/x', '/a/..', '/%2e%2e/x', '/objects/x.key', '/.']) {
    assert.equal(parseRequestPath(p).kind, 'not-found', p)
  }
  for (const p of ['', '*', 'latest.json', 'http://h/latest.json', '//etc', '/a//b', '/a/', '/%zz', '/%',
    '/..%2fx', '/a%5cb', '/a\\b', '/a%00', '/%c0%ae%c0%ae', '/%252e%252e', '/a b', '/.state/%zz']) {
    assert.equal(parseRequestPath(p).kind, 'bad-request', p)
  }
})

test('If-None-Match wins over If-Modified-Since, with the weak comparison', () => {
  const lastModified = fileHeaders(['latest.json'], st)['Last-Modified']!
  assert.equal(notModified({ 'if-none-match': etag }, etag, Number(st.mtimeMs)), true)
  assert.equal(notModified({ 'if-none-match': `"other", W/${etag}` }, etag, Number(st.mtimeMs)), true)
  assert.equal(notModified({ 'if-none-match': '*' }, etag, Number(st.mtimeMs)), true)
  assert.equal(notModified({ 'if-none-match': '"other"', 'if-modified-since': lastModified }, etag, Number(st.mtimeMs)), false)
  assert.equal(notModified({ 'if-modified-since': lastModified }, etag, Number(st.mtimeMs)), true)
  assert.equal(notModified({ 'if-modified-since': new Date(Number(st.mtimeMs) - 2000).toUTCString() }, etag, Number(st.mtimeMs)), false)
  assert.equal(notModified({ 'if-modified-since': 'yesterday' }, etag, Number(st.mtimeMs)), false)
  assert.equal(notModified({}, etag, Number(st.mtimeMs)), false)
})

test('If-Range honours only the current ETag, compared strongly; Range only on GET', () => {
  assert.deepEqual(rangeToServe('GET', { range: 'bytes=0-9', 'if-range': etag }, etag, 1000), { kind: 'partial', start: 0, end: 9 })
  assert.deepEqual(rangeToServe('GET', { range: 'bytes=0-9' }, etag, 1000), { kind: 'partial', start: 0, end: 9 })
  for (const ifRange of ['"stale-etag"', `W/${etag}`, new Date().toUTCString()]) {
    assert.deepEqual(rangeToServe('GET', { range: 'bytes=0-9', 'if-range': ifRange }, etag, 1000), { kind: 'full' }, ifRange)
  }
  assert.deepEqual(rangeToServe('HEAD', { range: 'bytes=0-9' }, etag, 1000), { kind: 'full' })
})

test('a body plan gives the status, the bytes and their headers', () => {
  assert.deepEqual(bodyPlan({ kind: 'full' }, 1000, 'latest.json'), {
    status: 200, start: 0, end: 999, length: 1000, headers: { 'Content-Type': 'application/json', 'Content-Length': 1000 },
  })
  assert.deepEqual(bodyPlan({ kind: 'partial', start: 10, end: 19 }, 1000, `${'ab'.repeat(32)}.tar.zst`), {
    status: 206, start: 10, end: 19, length: 10, headers: { 'Content-Type': 'application/zstd', 'Content-Length': 10, 'Content-Range': 'bytes 10-19/1000' },
  })
})

test('only content-named files are cached forever', () => {
  assert.equal(cacheControlFor(['latest.json']), 'no-cache, max-age=0')
  assert.equal(cacheControlFor(['objects', `${'ab'.repeat(32)}.tar.zst`]), 'public, max-age=31536000, immutable')
  assert.equal(cacheControlFor(['snapshots', '12.json']), 'public, max-age=31536000, immutable')
  assert.equal(fileHeaders(['latest.json'], st).ETag, etag)
})
