import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { chmod, mkdir, mkdtemp, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { connect } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { PrivateKeyInStoreError, SnapshotError, UsageError } from '../src/core/errors.js'
import { startStaticServer, type RunningServer, type StaticServerOptions } from '../src/http/static-server.js'

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

/** Raw http.request: `path` goes on the wire as given (fetch would normalise `..` away). */
function get(
  server: RunningServer,
  path: string,
  init: { method?: string; headers?: Record<string, string>; agent?: Agent } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: server.port,
        path,
        method: init.method ?? 'GET',
        headers: init.headers,
        agent: init.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
        res.on('error', reject)
      },
    )
    req.setTimeout(10_000, () => req.destroy(new Error(`timeout: ${path}`)))
    req.on('error', reject)
    req.end()
  })
}

const sha256hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

interface Store {
  dir: string
  root: string
  outside: string
  latest: Buffer
  snapshotId: string
  snapshot: Buffer
  object: Buffer
  objectName: string
}

async function makeStore(t: TestContext, objectSize = 100_000): Promise<Store> {
  const dir = await mkdtemp(join(tmpdir(), 'snapshot-test-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const root = join(dir, 'store')
  const outside = join(dir, 'outside')
  await mkdir(join(root, 'objects'), { recursive: true })
  await mkdir(join(root, 'snapshots'))
  await mkdir(join(root, '.state'))
  await mkdir(outside)
  await writeFile(join(outside, 'secret.txt'), 'TOP-SECRET-OUTSIDE')
  await writeFile(join(root, '.state', 'progress.json'), '{"private":true}')
  const latest = Buffer.from('{"snapshot":"2024-01-01T00"}\n')
  await writeFile(join(root, 'latest.json'), latest)
  const snapshotId = '7'
  const snapshot = Buffer.from('{"id":"2024-01-01T00","files":1}\n')
  await writeFile(join(root, 'snapshots', `${snapshotId}.json`), snapshot)
  const object = randomBytes(objectSize)
  const objectName = `${sha256hex(object)}.tar.zst`
  await writeFile(join(root, 'objects', objectName), object)
  return { dir, root, outside, latest, snapshotId, snapshot, object, objectName }
}

async function serve(t: TestContext, opts: StaticServerOptions): Promise<RunningServer> {
  const server = await startStaticServer({ host: '127.0.0.1', port: 0, ...opts })
  t.after(() => server.close())
  return server
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  assert.fail(`timed out waiting for ${what}`)
}

const openFds = async (): Promise<number> => (await readdir('/proc/self/fd')).length

// ---------------------------------------------------------------------------------------------
// Serving

test('GET and HEAD of latest.json are never cached; objects and snapshots are immutable', async (t) => {
  const s = await makeStore(t)
  const server = await serve(t, { root: s.root })
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/)

  const latest = await get(server, '/latest.json')
  assert.equal(latest.status, 200)
  assert.deepEqual(latest.body, s.latest)
  assert.equal(latest.headers['content-length'], String(s.latest.length))
  assert.equal(latest.headers['cache-control'], 'no-cache, max-age=0')
  assert.equal(latest.headers['content-type'], 'application/json')
  assert.equal(latest.headers['accept-ranges'], 'bytes')
  assert.match(latest.headers.etag ?? '', /^"[^"]+"$/)
  assert.ok(latest.headers['last-modified'])

  const obj = await get(server, `/objects/${s.objectName}`)
  assert.equal(obj.status, 200)
  assert.ok(obj.body.equals(s.object))
  assert.equal(obj.headers['content-length'], String(s.object.length))
  assert.equal(obj.headers['cache-control'], 'public, max-age=31536000, immutable')
  assert.equal(obj.headers['content-type'], 'application/zstd')

  const head = await get(server, `/objects/${s.objectName}`, { method: 'HEAD' })
  assert.equal(head.status, 200)
  assert.equal(head.body.length, 0)
  assert.equal(head.headers['content-length'], String(s.object.length))
  assert.equal(head.headers.etag, obj.headers.etag)
  assert.equal(head.headers['cache-control'], 'public, max-age=31536000, immutable')

  const headLatest = await get(server, '/latest.json', { method: 'HEAD' })
  assert.equal(headLatest.headers['cache-control'], 'no-cache, max-age=0')
  assert.equal(headLatest.headers['content-length'], String(s.latest.length))

  const snap = await get(server, `/snapshots/${s.snapshotId}.json`)
  assert.equal(snap.status, 200)
  assert.deepEqual(snap.body, s.snapshot)
  assert.equal(snap.headers['cache-control'], 'public, max-age=31536000, immutable')
  assert.equal(snap.headers['content-type'], 'application/json')

  await writeFile(join(s.root, 'objects', 'notes.bin'), 'x')
  assert.equal((await get(server, '/objects/notes.bin')).status, 404) // not a path a store holds

  assert.equal((await get(server, '/objects/missing.tar.zst')).status, 404)
  assert.equal((await get(server, '/objects')).status, 404) // directories are not listed
  assert.equal((await get(server, '/')).status, 404)
})

test('single ranges answer 206, unsatisfiable ones 416, multi-ranges the full body', async (t) => {
  const s = await makeStore(t, 1000)
  const server = await serve(t, { root: s.root })
  const path = `/objects/${s.objectName}`

  const cases: Array<[string, number, number]> = [
    ['bytes=10-19', 10, 19],
    ['bytes=990-', 990, 999],
    ['bytes=-25', 975, 999],
    ['bytes=500-5000', 500, 999],
  ]
  for (const [range, start, end] of cases) {
    const r = await get(server, path, { headers: { Range: range } })
    assert.equal(r.status, 206, range)
    assert.equal(r.headers['content-range'], `bytes ${start}-${end}/1000`, range)
    assert.equal(r.headers['content-length'], String(end - start + 1), range)
    assert.ok(r.body.equals(s.object.subarray(start, end + 1)), range)
  }

  for (const range of ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0']) {
    const r = await get(server, path, { headers: { Range: range } })
    assert.equal(r.status, 416, range)
    assert.equal(r.headers['content-range'], 'bytes */1000', range)
    assert.equal(r.body.length, 0)
  }

  const multi = await get(server, path, { headers: { Range: 'bytes=0-1,5-6' } })
  assert.equal(multi.status, 200)
  assert.ok(multi.body.equals(s.object))

  const head = await get(server, path, { method: 'HEAD', headers: { Range: 'bytes=0-9' } })
  assert.equal(head.status, 200) // Range is defined for GET only
  assert.equal(head.headers['content-length'], '1000')
})

test('If-None-Match and If-Modified-Since answer 304; If-Range only honours the current ETag', async (t) => {
  const s = await makeStore(t, 1000)
  const server = await serve(t, { root: s.root })
  const path = `/objects/${s.objectName}`
  const etag = (await get(server, path)).headers.etag ?? ''

  const nm = await get(server, path, { headers: { 'If-None-Match': etag } })
  assert.equal(nm.status, 304)
  assert.equal(nm.body.length, 0)
  assert.equal(nm.headers.etag, etag)
  assert.equal((await get(server, path, { headers: { 'If-None-Match': `"other", W/${etag}` } })).status, 304)
  assert.equal((await get(server, path, { headers: { 'If-None-Match': '"other"' } })).status, 200)

  const lastModified = (await get(server, '/latest.json')).headers['last-modified'] ?? ''
  assert.equal((await get(server, '/latest.json', { headers: { 'If-Modified-Since': lastModified } })).status, 304)

  const match = await get(server, path, { headers: { Range: 'bytes=0-9', 'If-Range': etag } })
  assert.equal(match.status, 206)
  assert.ok(match.body.equals(s.object.subarray(0, 10)))

  for (const ifRange of ['"stale-etag"', `W/${etag}`, new Date().toUTCString()]) {
    const r = await get(server, path, { headers: { Range: 'bytes=0-9', 'If-Range': ifRange } })
    assert.equal(r.status, 200, ifRange)
    assert.equal(r.headers['content-length'], '1000')
    assert.ok(r.body.equals(s.object), ifRange)
  }
})

test('methods other than GET and HEAD get 405 with Allow', async (t) => {
  const s = await makeStore(t)
  const server = await serve(t, { root: s.root })
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
    const r = await get(server, '/latest.json', { method })
    assert.equal(r.status, 405, method)
    assert.equal(r.headers.allow, 'GET, HEAD', method)
  }
})

test('path traversal in every spelling is refused without touching files outside the store', async (t) => {
  const s = await makeStore(t)
  const server = await serve(t, { root: s.root })
  const paths = [
    '/../outside/secret.txt',
    '/objects/../../outside/secret.txt',
    '/objects/../latest.json',
    '/./latest.json',
    '/%2e%2e/outside/secret.txt',
    '/%2E%2e/outside/secret.txt',
    '/%2e%2E/%2E%2E/outside/secret.txt',
    '/objects/%2e%2e/%2e%2e/outside/secret.txt',
    '/..%2foutside%2fsecret.txt',
    '/..%2Foutside/secret.txt',
    '/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt',
    '/..%5coutside%5csecret.txt',
    '/..%5Coutside/secret.txt',
    '/..\\outside\\secret.txt',
    '/objects\\..\\..\\outside\\secret.txt',
    '/latest.json%00',
    '/latest.json%00.png',
    '/%00/latest.json',
    `/${join(s.outside, 'secret.txt').replace(/^\/+/, '')}`,
    `${join(s.outside, 'secret.txt')}`,
    `/${join(s.outside, 'secret.txt')}`,
    '//outside/secret.txt',
    '/objects//latest.json',
    '/latest.json/',
    '/%ZZ/latest.json',
    '/%',
    '/%e0%a4%a',
    '/%c0%ae%c0%ae/outside/secret.txt',
    '/%252e%252e/outside/secret.txt',
    `http://127.0.0.1:${server.port}/../outside/secret.txt`,
  ]
  for (const path of paths) {
    const r = await get(server, path)
    assert.ok(r.status === 400 || r.status === 404, `${path} -> ${r.status}`)
    assert.ok(!r.body.toString('latin1').includes('TOP-SECRET'), path)
  }
  // The server is still fine afterwards.
  assert.equal((await get(server, '/latest.json')).status, 200)
})

test('symlinks leaving the store are 404; symlinks inside it may be served', async (t) => {
  const s = await makeStore(t)
  await symlink(join(s.outside, 'secret.txt'), join(s.root, 'objects', 'evil.tar.zst'))
  await symlink(s.outside, join(s.root, 'outdir'))
  await symlink('../latest.json', join(s.root, 'snapshots', '99.json'))
  await symlink('.state/progress.json', join(s.root, 'peek.json'))
  await symlink('loop-b', join(s.root, 'loop-a'))
  await symlink('loop-a', join(s.root, 'loop-b'))
  await symlink('nowhere', join(s.root, 'dangling.json'))
  const server = await serve(t, { root: s.root })

  for (const path of ['/objects/evil.tar.zst', '/outdir/secret.txt', '/peek.json', '/loop-a', '/dangling.json']) {
    const r = await get(server, path)
    assert.equal(r.status, 404, path)
    assert.ok(!r.body.toString().includes('TOP-SECRET') && !r.body.toString().includes('private'), path)
  }
  const inside = await get(server, '/snapshots/99.json')
  assert.equal(inside.status, 200)
  assert.deepEqual(inside.body, s.latest)
})

test('dot-paths and *.key files are never served', async (t) => {
  const s = await makeStore(t)
  await writeFile(join(s.root, '.latest.json.tmp-1234'), '{}')
  await writeFile(join(s.root, 'objects', '.partial'), 'x')
  // Deeper than the startup scan looks (16 levels), so the server starts; it must still refuse to serve it.
  const deep = 'a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r'
  await mkdir(join(s.root, deep), { recursive: true })
  await writeFile(join(s.root, deep, 'old.key'), 'not a pem')
  await symlink(`${deep}/old.key`, join(s.root, 'key-link.json'))
  const server = await serve(t, { root: s.root })
  for (const path of [
    '/.state/progress.json',
    '/.state',
    '/.latest.json.tmp-1234',
    '/objects/.partial',
    '/%2estate/progress.json',
    '/a/b/c/d/e/f/g/old.key',
    '/a/b/c/d/e/f/g/old%2ekey',
    '/key-link.json',
  ]) {
    assert.equal((await get(server, path)).status, 404, path)
  }
})

test('refuses to start when a private key is inside the store', async (t) => {
  const pem = '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n'
  const encrypted = '-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIGb\n-----END ENCRYPTED PRIVATE KEY-----\n'
  const cases: Array<[string, string]> = [
    ['signing.key', 'anything'],
    ['objects/leftover.key', 'anything'],
    ['signing.pem', pem],
    ['keys/backup.txt', encrypted],
    ['keys/old/master', `\n  ${pem}`],
  ]
  for (const [file, content] of cases) {
    const s = await makeStore(t)
    const full = join(s.root, ...file.split('/'))
    await mkdir(join(full, '..'), { recursive: true })
    await writeFile(full, content)
    await assert.rejects(startStaticServer({ root: s.root }), (err: unknown) => {
      assert.ok(err instanceof PrivateKeyInStoreError, file)
      assert.ok(err instanceof SnapshotError)
      assert.match(err.message, new RegExp(file.replace(/[.]/g, '\\.')))
      return true
    })
  }

  // Private state, public keys and hash-named objects are fine; objects' contents are not read.
  const s = await makeStore(t)
  await writeFile(join(s.root, '.state', 'signing.key'), pem)
  await writeFile(join(s.root, 'public.pem'), '-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n')
  await writeFile(join(s.root, 'objects', `${'a'.repeat(64)}.manifest.zst`), pem)
  await serve(t, { root: s.root })
})

test('rejects bad options and a missing store with a usage error', async (t) => {
  const s = await makeStore(t)
  await assert.rejects(startStaticServer({ root: join(s.dir, 'nope') }), UsageError)
  await assert.rejects(startStaticServer({ root: join(s.root, 'latest.json') }), UsageError)
  await assert.rejects(startStaticServer({ root: s.root, token: '' }), UsageError)
  await assert.rejects(startStaticServer({ root: s.root, port: 70000 }), UsageError)
  await assert.rejects(startStaticServer({ root: s.root, headersTimeoutMs: 5000, requestTimeoutMs: 1000 }), UsageError)
})

test('a bearer token is required when configured', async (t) => {
  const s = await makeStore(t)
  const server = await serve(t, { root: s.root, token: 's3cret-token' })
  const attempts: Array<Record<string, string>> = [
    {},
    { Authorization: 'Bearer wrong' },
    { Authorization: 'Bearer s3cret-token-longer' },
    { Authorization: 'Basic s3cret-token' },
    { Authorization: 's3cret-token' },
  ]
  for (const headers of attempts) {
    const r = await get(server, '/latest.json', { headers })
    assert.equal(r.status, 401, JSON.stringify(headers))
    assert.equal(r.headers['www-authenticate'], 'Bearer')
  }
  assert.equal((await get(server, '/latest.json', { method: 'POST' })).status, 401)
  const ok = await get(server, '/latest.json', { headers: { Authorization: 'Bearer s3cret-token' } })
  assert.equal(ok.status, 200)
  assert.deepEqual(ok.body, s.latest)
})

test('logs one plain line per request', async (t) => {
  const s = await makeStore(t)
  const lines: string[] = []
  const server = await serve(t, { root: s.root, log: (l) => lines.push(l) })
  await get(server, '/latest.json')
  await get(server, '/nope%0a.json')
  await waitFor('two log lines', () => lines.length >= 2)
  assert.equal(lines[0], `GET /latest.json 200 ${s.latest.length}`)
  assert.equal(lines[1], `GET /nope%0a.json 400 ${'400 Bad Request\n'.length}`)
  await get(server, '/latest.json', { method: 'HEAD' })
  await waitFor('three log lines', () => lines.length >= 3)
  assert.equal(lines[2], 'HEAD /latest.json 200 0')
})

test('200 concurrent downloads of an object all get the right bytes', async (t) => {
  const s = await makeStore(t, 256 * 1024)
  const server = await serve(t, { root: s.root })
  const agent = new Agent({ keepAlive: false, maxSockets: 256 })
  t.after(() => agent.destroy())
  const expected = sha256hex(s.object)
  let timer: NodeJS.Timeout | undefined
  const all = Promise.all(Array.from({ length: 200 }, () => get(server, `/objects/${s.objectName}`, { agent })))
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('200 downloads took longer than 30 s')), 30_000)
  })
  try {
    const replies = await Promise.race([all, timeout])
    assert.equal(replies.length, 200)
    for (const r of replies) {
      assert.equal(r.status, 200)
      assert.equal(sha256hex(r.body), expected)
    }
  } finally {
    clearTimeout(timer)
  }
})

test('client aborts mid-download neither crash the server nor leak file descriptors', { skip: process.platform !== 'linux' }, async (t) => {
  const s = await makeStore(t, 8 * 1024 * 1024)
  const lines: string[] = []
  const server = await serve(t, { root: s.root, log: (l) => lines.push(l) })
  await get(server, '/latest.json') // warm up lazily opened handles before counting
  const before = await openFds()

  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: server.port, path: `/objects/${s.objectName}`, agent: false }, (res) => {
        res.once('data', () => {
          req.destroy()
          resolve()
        })
      })
      req.setTimeout(5_000, () => req.destroy(new Error('timeout')))
      req.on('error', (err) => {
        if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET' && err.message !== 'socket hang up') reject(err)
      })
      req.end()
    })
  }
  await waitFor('20 aborted log lines', () => lines.filter((l) => l.endsWith(' aborted')).length === 20)
  await waitFor('file descriptors to be released', async () => (await openFds()) <= before)
  assert.equal((await get(server, '/latest.json')).status, 200)
})

test('stalled clients are dropped by the idle and header timeouts', async (t) => {
  const s = await makeStore(t, 32 * 1024 * 1024)
  const lines: string[] = []
  const server = await serve(t, {
    root: s.root,
    idleTimeoutMs: 300,
    headersTimeoutMs: 500,
    requestTimeoutMs: 1_000,
    log: (l) => lines.push(l),
  })

  // Connects and sends half a request line, then nothing.
  const silent = connect(server.port, '127.0.0.1')
  t.after(() => silent.destroy())
  silent.on('error', () => {})
  silent.write('GET /latest.json HTTP/1.1\r\n')
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('silent client was not dropped')), 5_000)
    silent.on('close', () => {
      clearTimeout(timer)
      resolve()
    })
    silent.resume()
  })

  // Asks for a large object and never reads: the server's writes stall, the socket goes quiet.
  const reader = connect(server.port, '127.0.0.1')
  t.after(() => reader.destroy())
  reader.on('error', () => {})
  reader.write(`GET /objects/${s.objectName} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)
  reader.pause()
  await waitFor('the stalled download to be cut', () => lines.some((l) => l.includes(s.objectName) && l.endsWith(' aborted')), 10_000)
  assert.equal((await get(server, '/latest.json')).status, 200)
})

test('close() returns promptly even with idle keep-alive connections', async (t) => {
  const s = await makeStore(t)
  const server = await startStaticServer({ root: s.root })
  const agent = new Agent({ keepAlive: true })
  t.after(() => agent.destroy())
  assert.equal((await get(server, '/latest.json', { agent })).status, 200)
  const started = Date.now()
  await server.close()
  assert.ok(Date.now() - started < 2_000, 'close waited for the keep-alive timeout')
  await server.close() // idempotent
  await assert.rejects(get(server, '/latest.json'))
})

test('a read error answers 500 and the server keeps serving', { skip: process.getuid?.() === 0 ? 'root reads any file' : false }, async (t) => {
  const s = await makeStore(t)
  const locked = join(s.root, 'objects', `${'b'.repeat(64)}.tar.zst`)
  await writeFile(locked, 'x')
  await chmod(locked, 0o000)
  const server = await serve(t, { root: s.root })
  assert.equal((await get(server, `/objects/${'b'.repeat(64)}.tar.zst`)).status, 500)
  assert.equal((await get(server, '/latest.json')).status, 200)
})

test('a relay: while its mirror holds the lock (or its watch runs, for a grace), a missing record or object is held until it lands; without them, or once they are let go, a 404', async (t) => {
  const s = await makeStore(t)
  const server = await serve(t, { root: s.root, mirrorHoldCheckMs: 10, mirrorHoldGraceMs: 500 })
  const body = randomBytes(5000)
  const name = `${sha256hex(body)}.tar.zst`
  // No mirror at work: a missing object is a 404 at once, as on any static host.
  assert.equal((await get(server, `/objects/${name}`)).status, 404)

  // A mirror copying (a lock naming this live process): the request waits for the file.
  await writeFile(join(s.root, '.mirror.lock'), `${process.pid} ${hostname()} ${new Date().toISOString()}\n`)
  const held = get(server, `/objects/${name}`)
  const record = get(server, '/snapshots/8.json')
  await new Promise((r) => setTimeout(r, 200))
  await writeFile(join(s.root, 'objects', `${name}.part`), body)
  await rename(join(s.root, 'objects', `${name}.part`), join(s.root, 'objects', name))
  const landed = await held
  assert.equal(landed.status, 200)
  assert.ok(landed.body.equals(body))
  // The mirror lets go without bringing the record: the held request is answered 404.
  await rm(join(s.root, '.mirror.lock'))
  assert.equal((await record).status, 404)

  // A lock left by a process that died is no mirror at work: no hold.
  await writeFile(join(s.root, '.mirror.lock'), `999999999 ${hostname()} ${new Date().toISOString()}\n`)
  assert.equal((await get(server, '/snapshots/9.json')).status, 404)
  await rm(join(s.root, '.mirror.lock'))

  // A mirror --watch that has not begun its copy yet: the request waits for it (the grace); a copy
  // that lands within the grace is served, and with none, the answer is a 404.
  const early = randomBytes(300)
  const earlyName = `${sha256hex(early)}.manifest.zst`
  await writeFile(join(s.root, '.mirror-watch'), `${process.pid} ${hostname()} ${new Date().toISOString()}\n`)
  const waiting = get(server, `/objects/${earlyName}`)
  await new Promise((r) => setTimeout(r, 100))
  await writeFile(join(s.root, '.mirror.lock'), `${process.pid} ${hostname()} ${new Date().toISOString()}\n`)
  await writeFile(join(s.root, 'objects', earlyName), early)
  const got = await waiting
  assert.equal(got.status, 200)
  assert.ok(got.body.equals(early))
  await rm(join(s.root, '.mirror.lock'))
  assert.equal((await get(server, '/snapshots/10.json')).status, 404) // after the grace: nothing began
  await rm(join(s.root, '.mirror-watch'))

  // The pointer is never held this way, and dot-files are still never served.
  await writeFile(join(s.root, '.mirror.lock'), `${process.pid} ${hostname()} ${new Date().toISOString()}\n`)
  assert.equal((await get(server, '/.mirror.lock')).status, 404)
  await rm(join(s.root, 'latest.json'))
  assert.equal((await get(server, '/latest.json')).status, 404)
})
