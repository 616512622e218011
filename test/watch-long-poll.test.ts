/**
 * The server side of `pull --watch`'s long-poll (src/http/static-server.ts): `GET
 * /latest.json?wait=S` with a matching If-None-Match is held until the pointer changes or the wait
 * ends, without being cut by the server's own timeouts, and never keeps close() waiting.
 */
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { request, type IncomingHttpHeaders } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { writeFileAtomic } from '../src/fs/durable.js'
import { startStaticServer, type RunningServer, type StaticServerOptions } from '../src/http/static-server.js'
import { longPollWaitMs } from '../src/http/static-request.js'

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

function get(server: RunningServer, path: string, headers: Record<string, string> = {}, onRequest?: (destroy: () => void) => void): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: server.port, path, headers, agent: false }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
    onRequest?.(() => req.destroy())
  })
}

async function store(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'snapshot-longpoll-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'latest.json'), '{"v":1}')
  return dir
}

async function serve(t: TestContext, opts: StaticServerOptions): Promise<RunningServer> {
  const s = await startStaticServer({ longPollCheckMs: 20, ...opts })
  t.after(() => s.close())
  return s
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error(`timed out waiting for ${what}`)
}

test('a held long-poll answers 200 with the new pointer once it is published, and is counted while held', async (t) => {
  const dir = await store(t)
  const server = await serve(t, { root: dir })
  const first = await get(server, '/latest.json')
  const etag = first.headers.etag as string
  const held = get(server, '/latest.json?wait=20', { 'if-none-match': etag })
  await until('the request to be held', () => server.heldRequests() === 1)
  await writeFileAtomic(join(dir, 'latest.json'), '{"v":2}') // a new inode, as a build publishes
  const r = await held
  assert.equal(r.status, 200)
  assert.equal(r.body, '{"v":2}')
  assert.notEqual(r.headers.etag, etag)
  assert.equal(server.heldRequests(), 0)
})

test('a held long-poll outlives the idle, header and request timeouts and ends with a 304 and the long-poll header', async (t) => {
  const dir = await store(t)
  const server = await serve(t, { root: dir, idleTimeoutMs: 300, headersTimeoutMs: 300, requestTimeoutMs: 300, longPollMaxMs: 1_500 })
  const etag = (await get(server, '/latest.json')).headers.etag as string
  // Asks for 20 s; the server grants its cap (1.5 s), and says so. A timeout cutting the held
  // request would destroy the socket: the client would see an error, not this 304.
  const r = await get(server, '/latest.json?wait=20', { 'if-none-match': etag })
  assert.equal(r.status, 304)
  assert.equal(r.headers['snapshot-long-poll'], '2')
})

test('what is not a matching long-poll is answered at once, as a static host would', async (t) => {
  const dir = await store(t)
  await mkdir(join(dir, 'snapshots'), { recursive: true })
  await writeFile(join(dir, 'snapshots', '1.json'), '{}') // serve answers only a store's paths
  const server = await serve(t, { root: dir })
  const etag = (await get(server, '/latest.json')).headers.etag as string
  const stale = await get(server, '/latest.json?wait=20', { 'if-none-match': '"something-else"' })
  assert.equal(stale.status, 200)
  const noWait = await get(server, '/latest.json', { 'if-none-match': etag })
  assert.equal(noWait.status, 304)
  assert.equal(noWait.headers['snapshot-long-poll'], undefined)
  const bad = await get(server, '/latest.json?wait=soon', { 'if-none-match': etag })
  assert.equal(bad.status, 304)
  assert.equal(bad.headers['snapshot-long-poll'], undefined)
  const otherEtag = (await get(server, '/snapshots/1.json')).headers.etag as string
  assert.equal((await get(server, '/snapshots/1.json?wait=20', { 'if-none-match': otherEtag })).status, 304)
  assert.equal(server.heldRequests(), 0)
})

test('held requests beyond the cap are answered at once; a client that leaves is let go', async (t) => {
  const dir = await store(t)
  const server = await serve(t, { root: dir, longPollMaxHeld: 2 })
  const etag = (await get(server, '/latest.json')).headers.etag as string
  const destroyers: (() => void)[] = []
  const held = [0, 1].map(() => get(server, '/latest.json?wait=30', { 'if-none-match': etag }, (d) => destroyers.push(d)).catch(() => null))
  await until('two held requests', () => server.heldRequests() === 2)
  const third = await get(server, '/latest.json?wait=30', { 'if-none-match': etag })
  assert.equal(third.status, 304)
  assert.equal(third.headers['snapshot-long-poll'], undefined, 'not held: the client falls back to its interval')
  for (const d of destroyers) d()
  await Promise.all(held)
  await until('the server to let go of the clients that left', () => server.heldRequests() === 0)
})

test('close() answers held requests at once instead of waiting out their wait', async (t) => {
  const dir = await store(t)
  const server = await startStaticServer({ root: dir, closeGraceMs: 60_000 })
  const etag = (await get(server, '/latest.json')).headers.etag as string
  const held = get(server, '/latest.json?wait=60', { 'if-none-match': etag })
  await until('the request to be held', () => server.heldRequests() === 1)
  const started = performance.now()
  await server.close()
  const r = await held
  assert.equal(r.status, 304)
  assert.equal(r.headers.connection, 'close')
  assert.ok(performance.now() - started < 30_000, 'close did not wait for the hold (60 s) or the grace period (60 s)')
})

test('longPollWaitMs reads only a whole-seconds wait on the root pointer, capped', () => {
  assert.equal(longPollWaitMs('GET', '/latest.json?wait=25', ['latest.json'], '"x"', 60_000), 25_000)
  assert.equal(longPollWaitMs('GET', '/latest.json?wait=900', ['latest.json'], '"x"', 60_000), 60_000)
  assert.equal(longPollWaitMs('GET', '/latest.json?wait=25', ['latest.json'], undefined, 60_000), 0)
  assert.equal(longPollWaitMs('HEAD', '/latest.json?wait=25', ['latest.json'], '"x"', 60_000), 0)
  assert.equal(longPollWaitMs('GET', '/snapshots/1.json?wait=25', ['snapshots', '1.json'], '"x"', 60_000), 0)
  assert.equal(longPollWaitMs('GET', '/latest.json?wait=-1', ['latest.json'], '"x"', 60_000), 0)
  assert.equal(longPollWaitMs('GET', '/latest.json?wait=1e9', ['latest.json'], '"x"', 60_000), 0)
  assert.equal(longPollWaitMs('GET', '/latest.json', ['latest.json'], '"x"', 60_000), 0)
})
