import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import {
  ChecksumMismatchError,
  LengthMismatchError,
  NetworkError,
  NoSpaceError,
  TooLargeError,
  UnsafeArchiveError,
} from '../src/core/errors.js'
import type { SourceOptions } from '../src/store/object-source.js'
import { openSource } from '../src/store/open-source.js'
import { retryDelayMs } from '../src/store/transfer-retry.js'

const BODY = randomBytes(256 * 1024)
const EXPECT = { sha256: createHash('sha256').update(BODY).digest('hex'), length: BODY.length }
const REL = `objects/${EXPECT.sha256}.tar.zst`
const FAST: SourceOptions = { retries: 3, retryBaseMs: 10, timeoutMs: { connect: 2000, idle: 2000 } }

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void

/** A fresh server on 127.0.0.1:0 for one test; `seen` holds every request's headers. */
async function serve(t: TestContext, handler: Handler): Promise<{ url: string; seen: IncomingHttpHeaders[] }> {
  const seen: IncomingHttpHeaders[] = []
  const server = createServer((req, res) => {
    seen.push(req.headers)
    handler(req, res, seen.length)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/store`, seen }
}

/** What a sound static server does: 200, or 206 for `Range: bytes=N-`. */
function sendRange(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
  if (!m) {
    res.writeHead(200, { 'content-length': body.length })
    res.end(body)
    return
  }
  const from = Number(m[1])
  res.writeHead(206, { 'content-length': body.length - from, 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` })
  res.end(body.subarray(from))
}

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'object-source-test-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

test('http: fetches an object, verifies it, and leaves no .part', async (t) => {
  const dir = await tempDir(t)
  const { url, seen } = await serve(t, (req, res) => {
    assert.equal(req.url, `/store/${REL}`)
    sendRange(req, res, BODY)
  })
  const dest = join(dir, 'obj')
  const progress: number[] = []
  await openSource(url, FAST).fetchObject(REL, dest, EXPECT, (n) => progress.push(n))
  assert.deepEqual(await readFile(dest), BODY)
  assert.deepEqual(await readdir(dir), ['obj'])
  assert.equal(progress.at(-1), BODY.length)
  assert.equal(seen.length, 1)
  assert.equal(seen[0]!.range, undefined)
})

test('http: getSmall asks for a fresh copy, and says null on 404', async (t) => {
  const { url, seen } = await serve(t, (req, res) => {
    if (req.url === '/store/latest.json') res.end('{"id":7}')
    else res.writeHead(404).end()
  })
  const source = openSource(url, FAST)
  assert.equal(String(await source.getSmall('latest.json', 1024)), '{"id":7}')
  assert.equal(seen[0]!['cache-control'], 'no-cache')
  assert.equal(await source.getSmall('snapshots/8.json', 1024), null)
  assert.equal(seen.length, 2)
})

test('http: getSmall refuses a body over maxBytes, declared or not', async (t) => {
  const { url } = await serve(t, (req, res) => {
    if (req.url === '/store/declared.json') {
      res.writeHead(200, { 'content-length': 5000 })
      res.end(Buffer.alloc(5000))
    } else {
      res.writeHead(200) // chunked: no length up front
      res.write(Buffer.alloc(600))
      res.end(Buffer.alloc(600))
    }
  })
  const source = openSource(url, FAST)
  await assert.rejects(source.getSmall('declared.json', 1000), TooLargeError)
  await assert.rejects(source.getSmall('chunked.json', 1000), TooLargeError)
})

test('http: a body with the wrong sha256 is refused and its .part removed', async (t) => {
  const dir = await tempDir(t)
  const evil = Buffer.from(BODY)
  evil[1000] = evil[1000]! ^ 0xff
  const { url, seen } = await serve(t, (req, res) => sendRange(req, res, evil))
  const dest = join(dir, 'obj')
  await assert.rejects(openSource(url, FAST).fetchObject(REL, dest, EXPECT), ChecksumMismatchError)
  assert.deepEqual(await readdir(dir), [])
  assert.equal(seen.length, 1, 'a fresh download that fails verification is not retried')
})

test('http: a server sending more than the declared length is cut off and refused', async (t) => {
  const dir = await tempDir(t)
  let written = 0
  const { url } = await serve(t, (req, res) => {
    if (req.url?.endsWith('declared')) {
      res.writeHead(200, { 'content-length': BODY.length + 1 }).end(Buffer.concat([BODY, Buffer.alloc(1)]))
      return
    }
    res.writeHead(200) // chunked and endless, up to a bound so the test cannot run away
    void (async () => {
      for (let i = 0; i < 1024 && !res.destroyed; i++) {
        written += BODY.length
        if (!res.write(BODY)) await new Promise((resolve) => (res.once('drain', resolve), res.once('close', resolve)))
      }
      res.end()
    })()
  })
  const source = openSource(url, FAST)
  await assert.rejects(source.fetchObject(REL, join(dir, 'obj'), EXPECT), LengthMismatchError)
  assert.ok(written < 64 * BODY.length, `the server got to write ${written} bytes`)
  await assert.rejects(source.fetchObject(`${REL}.declared`, join(dir, 'obj'), EXPECT), LengthMismatchError)
  assert.deepEqual(await readdir(dir), [])
})

test('http: 503 twice, then 200: retried with backoff', async (t) => {
  const dir = await tempDir(t)
  const { url, seen } = await serve(t, (req, res, n) => {
    if (n <= 2) res.writeHead(503, { 'retry-after': '0' }).end('busy')
    else sendRange(req, res, BODY)
  })
  await openSource(url, FAST).fetchObject(REL, join(dir, 'obj'), EXPECT)
  assert.deepEqual(await readFile(join(dir, 'obj')), BODY)
  assert.equal(seen.length, 3)
})

test('http: retries run out on a persistent 500: a NetworkError naming the URL', async (t) => {
  const dir = await tempDir(t)
  const { url, seen } = await serve(t, (_req, res) => res.writeHead(500).end())
  const err = await openSource(url, { ...FAST, retries: 2 })
    .fetchObject(REL, join(dir, 'obj'), EXPECT)
    .catch((e: unknown) => e)
  assert.ok(err instanceof NetworkError)
  assert.match(err.message, new RegExp(`${url}/${REL}: HTTP 500.*3 attempts`))
  assert.equal(seen.length, 3)
})

test('http: a body that always ends short fails once retries run out', async (t) => {
  const dir = await tempDir(t)
  const { url, seen } = await serve(t, (req, res) => sendRange(req, res, BODY.subarray(0, BODY.length - 1000)))
  await assert.rejects(openSource(url, { ...FAST, retries: 2 }).fetchObject(REL, join(dir, 'obj'), EXPECT), (err: unknown) => {
    assert.ok(err instanceof NetworkError)
    assert.match(err.message, /gave up after 3 attempts/)
    return true
  })
  assert.equal(seen.length, 3)
  assert.ok(!(await readdir(dir)).includes('obj'))
})

test('http: nobody listening: a NetworkError naming the URL and the cause, no empty .part', async (t) => {
  const dir = await tempDir(t)
  const { url } = await serve(t, (_req, res) => res.end())
  const dead = url.replace(/:\d+\//, ':9/') // port 9 (discard) is closed on a test machine
  await assert.rejects(openSource(dead, { ...FAST, retries: 1 }).fetchObject(REL, join(dir, 'obj'), EXPECT), (err: unknown) => {
    assert.ok(err instanceof NetworkError)
    assert.match(err.message, /127\.0\.0\.1:9\/store\/objects\/.*ECONNREFUSED.*2 attempts/)
    return true
  })
  assert.deepEqual(await readdir(dir), [])
})

test('http: a connection reset halfway resumes with Range from the bytes on disk', async (t) => {
  const dir = await tempDir(t)
  const half = 100_000
  const { url, seen } = await serve(t, (req, res, n) => {
    if (n === 1) {
      res.writeHead(200, { 'content-length': BODY.length })
      res.write(BODY.subarray(0, half), () => setTimeout(() => res.socket?.destroy(), 200))
    } else {
      sendRange(req, res, BODY)
    }
  })
  await openSource(url, FAST).fetchObject(REL, join(dir, 'obj'), EXPECT)
  assert.deepEqual(await readFile(join(dir, 'obj')), BODY)
  assert.equal(seen.length, 2)
  assert.equal(seen[1]!.range, `bytes=${half}-`)
  assert.deepEqual(await readdir(dir), ['obj'])
})

test('http: a stall mid-body trips the idle timeout, and the retry resumes', async (t) => {
  const dir = await tempDir(t)
  const half = 100_000
  const { url, seen } = await serve(t, (req, res, n) => {
    if (n === 1) {
      res.writeHead(200, { 'content-length': BODY.length })
      res.write(BODY.subarray(0, half)) // and then nothing, until the test's server closes
    } else {
      sendRange(req, res, BODY)
    }
  })
  const started = Date.now()
  await openSource(url, { ...FAST, timeoutMs: { connect: 2000, idle: 300 } }).fetchObject(REL, join(dir, 'obj'), EXPECT)
  assert.deepEqual(await readFile(join(dir, 'obj')), BODY)
  assert.equal(seen[1]!.range, `bytes=${half}-`)
  assert.ok(Date.now() - started < 5000)
})

test('http: a server ignoring Range (200) restarts the part from zero', async (t) => {
  const dir = await tempDir(t)
  const dest = join(dir, 'obj')
  await writeFile(`${dest}.part`, BODY.subarray(0, 5000))
  const { url, seen } = await serve(t, (_req, res) => res.writeHead(200, { 'content-length': BODY.length }).end(BODY))
  await openSource(url, FAST).fetchObject(REL, dest, EXPECT)
  assert.deepEqual(await readFile(dest), BODY)
  assert.equal(seen[0]!.range, 'bytes=5000-')
  assert.deepEqual(await readdir(dir), ['obj'])
})

test('http: a corrupt .part is not resumed forever: one clean download decides', async (t) => {
  const dir = await tempDir(t)
  const dest = join(dir, 'obj')
  await writeFile(`${dest}.part`, Buffer.alloc(5000, 0x55)) // not the object's first bytes
  const { url, seen } = await serve(t, (req, res) => sendRange(req, res, BODY))
  await openSource(url, FAST).fetchObject(REL, dest, EXPECT)
  assert.deepEqual(await readFile(dest), BODY)
  assert.deepEqual(
    seen.map((h) => h.range),
    ['bytes=5000-', undefined],
  )
})

test('http: a 206 that does not continue where we are is not spliced in', async (t) => {
  const dir = await tempDir(t)
  const dest = join(dir, 'obj')
  await writeFile(`${dest}.part`, BODY.subarray(0, 5000))
  const { url, seen } = await serve(t, (req, res, n) => {
    if (n === 1) {
      res.writeHead(206, { 'content-range': `bytes 4000-${BODY.length - 1}/${BODY.length}` })
      res.end(BODY.subarray(4000))
    } else {
      sendRange(req, res, BODY)
    }
  })
  await openSource(url, FAST).fetchObject(REL, dest, EXPECT)
  assert.deepEqual(await readFile(dest), BODY)
  assert.deepEqual(
    seen.map((h) => h.range),
    ['bytes=5000-', undefined],
  )
})

test('http: 404 is a NetworkError for an object, with nothing left behind', async (t) => {
  const dir = await tempDir(t)
  const { url, seen } = await serve(t, (_req, res) => res.writeHead(404).end())
  await assert.rejects(openSource(url, FAST).fetchObject(REL, join(dir, 'obj'), EXPECT), (err: unknown) => {
    assert.ok(err instanceof NetworkError)
    assert.match(err.message, /missing from the store/)
    return true
  })
  assert.equal(seen.length, 1, '404 is not retried')
  assert.deepEqual(await readdir(dir), [])
})

test('http: the token goes out as a Bearer header', async (t) => {
  const dir = await tempDir(t)
  const { url, seen } = await serve(t, (req, res) => {
    if (req.headers.authorization !== 'Bearer s3cret') res.writeHead(401).end()
    else if (req.url === '/store/latest.json') res.end('{}')
    else sendRange(req, res, BODY)
  })
  await openSource(url, { ...FAST, token: 's3cret' }).fetchObject(REL, join(dir, 'obj'), EXPECT)
  assert.equal(String(await openSource(url, { ...FAST, token: 's3cret' }).getSmall('latest.json', 100)), '{}')
  await assert.rejects(openSource(url, FAST).getSmall('latest.json', 100), /HTTP 401.*token/)
  assert.deepEqual(
    seen.map((h) => h.authorization),
    ['Bearer s3cret', 'Bearer s3cret', undefined],
  )
})

test('http: an abort stops the download and keeps the .part for later', async (t) => {
  const dir = await tempDir(t)
  const controller = new AbortController()
  const { url } = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-length': BODY.length })
    res.write(BODY.subarray(0, 1000), () => setTimeout(() => controller.abort(), 100))
  })
  await assert.rejects(openSource(url, { ...FAST, signal: controller.signal }).fetchObject(REL, join(dir, 'obj'), EXPECT), {
    name: 'AbortError',
  })
  assert.deepEqual(await readdir(dir), ['obj.part'])
})

test('http: a full disk is a NoSpaceError and frees the .part', async (t) => {
  const dir = await tempDir(t)
  // Fault injection: the part file is /dev/full, where every write fails with ENOSPC.
  await symlink('/dev/full', join(dir, 'obj.part'))
  const { url } = await serve(t, (req, res) => sendRange(req, res, BODY))
  await assert.rejects(openSource(url, FAST).fetchObject(REL, join(dir, 'obj'), EXPECT), NoSpaceError)
  assert.deepEqual(await readdir(dir), [])
})

test('dir: same contract from a local store directory', async (t) => {
  const store = await tempDir(t)
  const dir = await tempDir(t)
  await mkdir(join(store, 'objects'))
  await writeFile(join(store, REL), BODY)
  await writeFile(join(store, 'latest.json'), '{"id":7}')
  const source = openSource(store)
  assert.equal(source.description, store)
  assert.equal(String(await source.getSmall('latest.json', 100)), '{"id":7}')
  assert.equal(await source.getSmall('snapshots/8.json', 100), null)
  await assert.rejects(source.getSmall('latest.json', 5), TooLargeError)
  await source.fetchObject(REL, join(dir, 'obj'), EXPECT)
  assert.deepEqual(await readFile(join(dir, 'obj')), BODY)
  await assert.rejects(source.fetchObject('objects/nope.tar.zst', join(dir, 'nope'), EXPECT), /missing from the store/)
  for (const bad of ['../latest.json', 'objects/../../etc/passwd', '/etc/passwd', '', 'objects/.hidden']) {
    await assert.rejects(source.getSmall(bad, 100), UnsafeArchiveError)
    await assert.rejects(source.fetchObject(bad, join(dir, 'x'), EXPECT), UnsafeArchiveError)
  }
  assert.deepEqual(await readdir(dir), ['obj'])
})

test('dir: a corrupt or oversized object is refused and leaves no .part', async (t) => {
  const store = await tempDir(t)
  const dir = await tempDir(t)
  await mkdir(join(store, 'objects'))
  const corrupt = Buffer.from(BODY)
  corrupt[7] = corrupt[7]! ^ 1
  await writeFile(join(store, 'objects', 'corrupt'), corrupt)
  await writeFile(join(store, 'objects', 'long'), Buffer.concat([BODY, BODY]))
  await writeFile(join(store, 'objects', 'short'), BODY.subarray(1))
  const source = openSource(store)
  await assert.rejects(source.fetchObject('objects/corrupt', join(dir, 'obj'), EXPECT), ChecksumMismatchError)
  await assert.rejects(source.fetchObject('objects/long', join(dir, 'obj'), EXPECT), LengthMismatchError)
  await assert.rejects(source.fetchObject('objects/short', join(dir, 'obj'), EXPECT), LengthMismatchError)
  assert.deepEqual(await readdir(dir), [])
})

test('retryDelayMs doubles from the base, with jitter in the upper half, up to the cap', () => {
  assert.equal(retryDelayMs(1, 500, 10_000, () => 0), 250)
  assert.equal(retryDelayMs(1, 500, 10_000, () => 1), 500)
  assert.equal(retryDelayMs(3, 500, 10_000, () => 1), 2000)
  assert.equal(retryDelayMs(10, 500, 10_000, () => 1), 10_000)
  assert.equal(retryDelayMs(10, 500, 10_000, () => 0), 5000)
})
