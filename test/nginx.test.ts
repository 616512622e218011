import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { runCli, runJson } from './helpers/cli.js'
import { startNginx, type Nginx } from './helpers/nginx.js'
import { treeDiff, writeTree } from './helpers/tree.js'

/**
 * The repository's nginx config (deploy/nginx/snapshot-store.conf) on Debian's nginx: replicas
 * pull through it with --pubkey; the pointer is never cached and objects are immutable; Range
 * works; nothing but the store's own paths is served.
 */
describe('nginx serving a store with deploy/nginx/snapshot-store.conf', () => {
  let dir: string
  let source: string
  let store: string
  let keys: string
  let nginx: Nginx
  let object: string

  /** A raw request: fetch() would normalise paths like /objects/../.state before sending them. */
  const raw = (path: string, method = 'GET', headers: Record<string, string> = {}) =>
    new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((ok, fail) => {
      const u = new URL(nginx.url)
      const req = request({ host: u.hostname, port: u.port, path, method, headers }, (res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString('latin1')))
        res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
      req.on('error', fail)
      req.end()
    })

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-nginx-'))
    chmodSync(dir, 0o755) // nginx's workers run as an unprivileged user: the store must be readable to it
    source = join(dir, 'master')
    store = join(dir, 'store')
    keys = join(dir, 'keys')
    mkdirSync(source)
    writeTree(source, { 'a.m3u': 'a\n', 'dir/b.m3u': 'b\n', link: { link: 'a.m3u' } })
    for (let i = 0; i < 10; i++) writeTree(source, { [`p/${i}.m3u`]: `${i} ${createHash('sha256').update(String(i)).digest('hex')}\n` })
    await runJson(['keygen', '--out', keys, '--quiet'])
    await runJson(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--quiet'])
    object = `objects/${readdirSync(join(store, 'objects')).find((n) => n.endsWith('.tar.zst'))!}`
    // what must never be served, put where a careless config would serve it
    writeFileSync(join(store, 'snapshot.key'), 'PRIVATE KEY\n')
    writeFileSync(join(store, 'objects', `${'a'.repeat(64)}.key`), 'PRIVATE KEY\n')
    writeFileSync(join(store, '.hidden'), 'secret\n')
    writeFileSync(join(store, 'objects', '.partial.tmp'), 'temp\n')
    symlinkSync('/etc/passwd', join(store, 'objects', `${'b'.repeat(64)}.tar.zst`))
    nginx = await startNginx(store, join(dir, 'nginx'))
  })
  after(async () => {
    await nginx?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('a replica pulls through nginx with --pubkey, then again after a new build', async () => {
    const target = join(dir, 'replica')
    const pull = () => runJson<{ action: string; id: number }>(['pull', '--from', nginx.url, '--target', target, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--quiet'])
    assert.equal((await pull()).action, 'swapped')
    assert.deepEqual(treeDiff(source, target), [])
    writeTree(source, { 'a.m3u': 'a2\n', 'new.m3u': 'new\n' })
    await runJson(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--quiet'])
    const second = await pull()
    assert.equal(second.action, 'swapped')
    assert.equal(second.id, 2)
    assert.deepEqual(treeDiff(source, target), [])
  })

  test('cache headers: the pointer revalidates (ETag, 304), objects and records are immutable', async () => {
    const pointer = await raw('/latest.json')
    assert.equal(pointer.status, 200)
    assert.equal(pointer.headers['cache-control'], 'no-cache')
    assert.equal(pointer.headers['content-type'], 'application/json')
    const etag = String(pointer.headers.etag)
    assert.ok(etag.length > 2)
    assert.equal((await raw('/latest.json', 'GET', { 'if-none-match': etag })).status, 304)
    const o = await raw(`/${object}`)
    assert.equal(o.status, 200)
    assert.equal(o.headers['cache-control'], 'public, max-age=31536000, immutable')
    assert.equal(o.headers['content-encoding'], undefined)
    const rec = await raw('/snapshots/1.json')
    assert.equal(rec.headers['cache-control'], 'public, max-age=31536000, immutable')
  })

  test('Range: 206 with Content-Range, as a resuming replica asks', async () => {
    const whole = await raw(`/${object}`)
    const part = await raw(`/${object}`, 'GET', { range: 'bytes=5-' })
    assert.equal(part.status, 206)
    assert.equal(part.headers['content-range'], `bytes 5-${whole.body.length - 1}/${whole.body.length}`)
    assert.equal(part.body, whole.body.slice(5))
    assert.equal((await raw(`/${object}`, 'GET', { range: `bytes=${whole.body.length + 10}-` })).status, 416)
  })

  test('nothing but the store\'s paths: no listing, no dot-file, no .state, no key, no symlink, no other method', async () => {
    for (const path of ['/', '/objects/', '/snapshots/', '/.state/', '/.state/index-1.bin', '/.hidden', '/objects/.partial.tmp', '/snapshot.key', `/objects/${'a'.repeat(64)}.key`, '/objects/../.state/index-1.bin', '/objects/%2e%2e/.state/index-1.bin', '/%2estate/index-1.bin', `/objects/${'b'.repeat(64)}.tar.zst`, '/nginx.conf', '/latest.json/']) {
      const r = await raw(path)
      assert.ok(r.status === 404 || r.status === 403 || r.status === 400, `${path}: HTTP ${r.status}`)
      assert.doesNotMatch(r.body, /PRIVATE KEY|secret|root:|index-1|playlist-snapshot-index/, path)
    }
    for (const method of ['POST', 'PUT', 'DELETE']) assert.equal((await raw('/latest.json', method)).status, 405, method)
    const r = await runCli(['pull', '--from', `${nginx.url}.state/`, '--target', join(dir, 'nowhere'), '--quiet', '--retries', '0'])
    assert.equal(r.code, 10, r.stderr) // "no snapshot here": a 404, not the master's state
  })
})
