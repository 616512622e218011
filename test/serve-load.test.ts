import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { BIN, runCli, runJson } from './helpers/cli.js'
import { treeDiff, writeTree } from './helpers/tree.js'

/**
 * `snapshot serve` as a real process under load and under attack: 200 concurrent downloads with
 * every byte checked (scripts/serve-load.ts measures requests/s and MB/s; no timing is asserted
 * here), path traversal in every spelling, symlinks out of the store, a private key in the store,
 * a slow client, and the bearer token from the flag and from SNAPSHOT_TOKEN.
 */
const LOAD_SCRIPT = resolve(dirname(fileURLToPath(import.meta.url)), '../scripts/serve-load.js')

interface Served {
  url: string
  port: number
  child: ChildProcess
  stop(): Promise<void>
}

/** `snapshot serve` on 127.0.0.1, port 0, with extra flags and environment. */
async function serve(store: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Served> {
  const child = spawn(process.execPath, [BIN, 'serve', '--store', store, '--host', '127.0.0.1', '--port', '0', '--json', '--quiet', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SNAPSHOT_TOKEN: '', ...env },
  })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const started = await new Promise<{ url: string; port: number }>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`serve did not start: ${stderr}`)), 15_000)
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer)
      ok(JSON.parse(line) as { url: string; port: number })
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      fail(new Error(`serve exited ${code}: ${stderr}`))
    })
  })
  return {
    ...started,
    child,
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done()
        child.once('exit', () => done())
        child.kill('SIGTERM')
      }),
  }
}

/** One request written byte for byte (no client normalises the path), read to the close. */
function raw(port: number, requestText: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((ok, fail) => {
    const socket = connect(port, '127.0.0.1')
    let data = ''
    const timer = setTimeout(() => {
      socket.destroy()
      fail(new Error(`no answer to ${JSON.stringify(requestText)}`))
    }, timeoutMs)
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => (data += d))
    socket.on('error', () => undefined)
    socket.on('close', () => {
      clearTimeout(timer)
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1] ?? 0)
      ok({ status, body: data })
    })
    socket.write(requestText, 'latin1') // not end(): a half-closed client gets no answer from Node
  })
}

const get = (port: number, target: string, headers = ''): Promise<{ status: number; body: string }> =>
  raw(port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${headers}\r\n`)

describe('snapshot serve under load and attack', () => {
  let dir: string
  let source: string
  let store: string
  let keys: string

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-serve-load-'))
    source = join(dir, 'master')
    store = join(dir, 'store')
    keys = join(dir, 'keys')
    const files: Record<string, string> = {}
    for (let i = 0; i < 300; i++) files[`d${i % 10}/p${i}.m3u`] = `#EXTM3U\n#EXTINF:${i},Artist\nhttp://example.invalid/${i}.mp3\n`
    writeTree(source, files)
    await runJson(['keygen', '--out', keys])
    // Three snapshots: objects from a few hundred bytes to about 400 KB.
    for (let round = 0; round < 3; round++) {
      writeFileSync(join(source, 'blob.bin'), randomBytes(400_000))
      writeFileSync(join(source, `d0/p${round}.m3u`), `round ${round}\n`)
      await runJson(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key')])
    }
    writeFileSync(join(dir, 'secret.txt'), 'TOP-SECRET outside the store\n')
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  test('200 concurrent downloads from a real `snapshot serve`, every byte right, no errors', async (t) => {
    const child = spawn(process.execPath, [LOAD_SCRIPT, '--store', store, '--concurrency', '200', '--seconds', '3', '--requests', '1500', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const code = await new Promise<number | null>((ok) => child.on('close', ok))
    assert.equal(code, 0, stdout + stderr)
    const r = JSON.parse(stdout) as { peakInFlight: number; connections: number; requests: number; errors: number; errorSamples: string[]; bytes: number; seconds: number; requestsPerSecond: number; megabytesPerSecond: number }
    assert.equal(r.errors, 0, r.errorSamples.join('\n'))
    assert.equal(r.peakInFlight, 200)
    assert.ok(r.connections >= 200, 'each download on its own connection')
    assert.ok(r.requests >= 200)
    t.diagnostic(`serve load: 200 concurrent, ${r.requests} requests in ${r.seconds.toFixed(2)} s: ${r.requestsPerSecond.toFixed(0)} req/s, ${r.megabytesPerSecond.toFixed(1)} MB/s, ${r.errors} errors`)
  })

  test('path traversal in every spelling is refused (400 or 404), and nothing outside the store leaks', async (t) => {
    const s = await serve(store)
    t.after(() => s.stop())
    assert.equal((await get(s.port, '/latest.json')).status, 200)
    const spellings = [
      '/../secret.txt',
      '/../../../../../etc/passwd',
      '/objects/../../secret.txt',
      '/snapshots/../latest.json',
      '/%2e%2e/secret.txt',
      '/%2E%2e/secret.txt',
      '/%2e%2E/%2E%2E/etc/passwd',
      '/objects/%2e%2e/%2e%2e/secret.txt',
      '/%2e%2e%2fsecret.txt',
      '/objects%2f..%2f..%2fsecret.txt',
      '/objects/..%2f..%2fsecret.txt',
      '/objects%2F%2E%2E%2F%2E%2E%2Fsecret.txt',
      '/..%5csecret.txt',
      '/objects%5c..%5c..%5csecret.txt',
      '/..\\secret.txt',
      '/objects\\..\\..\\secret.txt',
      '/%252e%252e/secret.txt',
      '/%c0%ae%c0%ae/secret.txt',
      '/%2e%2e%00/secret.txt',
      '/latest.json%00.txt',
      '//etc/passwd',
      '//../secret.txt',
      '/objects//../../secret.txt',
      '/etc/passwd',
      `/${join(dir, 'secret.txt').replace(/^\//, '')}`,
      `/${encodeURIComponent(join(dir, 'secret.txt'))}`,
      'http://127.0.0.1/../secret.txt',
      'http://127.0.0.1/etc/passwd',
      '/./latest.json',
      '/%2e/latest.json',
      '/.state/build.lock',
      '/%2estate/build.lock',
      '/objects/.%2e/.state/build.lock',
      '*',
    ]
    const statuses = new Map<number, number>()
    for (const target of spellings) {
      const r = await get(s.port, target)
      assert.ok(r.status === 400 || r.status === 404, `${target}: HTTP ${r.status}`)
      assert.ok(!r.body.includes('TOP-SECRET') && !r.body.includes('root:'), `${target} leaked a file`)
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)
    }
    t.diagnostic(`traversal spellings: ${spellings.length} tried, all refused (${[...statuses].map(([k, v]) => `${v}x ${k}`).join(', ')})`)
  })

  test('symlinks that leave the store are not followed (404)', async (t) => {
    const linked = join(dir, 'linked-store')
    mkdirSync(join(linked, 'objects'), { recursive: true })
    mkdirSync(join(linked, 'snapshots'))
    copyFileSync(join(store, 'latest.json'), join(linked, 'latest.json'))
    symlinkSync('../../secret.txt', join(linked, 'snapshots', '999.json'))
    symlinkSync('/etc/passwd', join(linked, 'objects', `${'a'.repeat(64)}.tar.zst`))
    symlinkSync('..', join(linked, 'up'))
    symlinkSync(dir, join(linked, 'abs'))
    const s = await serve(linked)
    t.after(() => s.stop())
    for (const target of ['/snapshots/999.json', `/objects/${'a'.repeat(64)}.tar.zst`, '/up/secret.txt', '/abs/secret.txt']) {
      const r = await get(s.port, target)
      assert.equal(r.status, 404, `${target}: HTTP ${r.status}`)
      assert.ok(!r.body.includes('TOP-SECRET') && !r.body.includes('root:'))
    }
    assert.equal((await get(s.port, '/latest.json')).status, 200)
  })

  test('a private key inside the store: serve refuses to start (exit 6)', async () => {
    const named = join(dir, 'store-with-key')
    mkdirSync(named)
    copyFileSync(join(keys, 'snapshot.key'), join(named, 'snapshot.key'))
    const disguised = join(dir, 'store-with-pem')
    mkdirSync(join(disguised, 'snapshots'), { recursive: true })
    copyFileSync(join(keys, 'snapshot.key'), join(disguised, 'snapshots', 'notes.txt'))
    for (const s of [named, disguised]) {
      const r = await runCli(['serve', '--store', s, '--host', '127.0.0.1', '--port', '0'], { timeoutMs: 15_000 })
      assert.equal(r.code, 6, r.stderr)
      assert.match(r.stderr, /ERR_PRIVATE_KEY_IN_STORE/)
    }
  })

  test('a slow client that sends half a request line is dropped within --header-timeout', async (t) => {
    const s = await serve(store, ['--header-timeout', '1', '--idle-timeout', '60'])
    t.after(() => s.stop())
    const dropped = (text: string): Promise<number> =>
      new Promise((ok, fail) => {
        const started = Date.now()
        const socket = connect(s.port, '127.0.0.1', () => socket.write(text))
        const timer = setTimeout(() => {
          socket.destroy()
          fail(new Error(`still connected after 8 s (sent ${JSON.stringify(text)})`))
        }, 8000)
        socket.on('error', () => undefined)
        socket.resume()
        socket.on('close', () => {
          clearTimeout(timer)
          ok(Date.now() - started)
        })
      })
    const half = await dropped('GET /latest.json HT')
    const silent = await dropped('')
    const headless = await dropped('GET /latest.json HTTP/1.1\r\nHost: 127.0.0.1\r\n')
    t.diagnostic(`dropped after ${half} ms (half a request line), ${silent} ms (nothing sent), ${headless} ms (headers never ended); --header-timeout 1 --idle-timeout 60`)
    // Node checks its header deadline once a second: the bound is the timeout plus that tick.
    for (const ms of [half, silent, headless]) assert.ok(ms < 3500, `${ms} ms`)
    // and the server still answers everyone else
    assert.equal((await get(s.port, '/latest.json')).status, 200)
  })

  test('bearer token, from --token and from SNAPSHOT_TOKEN: 401 without it, 200 with it', async (t) => {
    const token = 'tok-' + randomBytes(12).toString('hex')
    const viaFlag = await serve(store, ['--token', token])
    t.after(() => viaFlag.stop())
    const viaEnv = await serve(store, [], { SNAPSHOT_TOKEN: token })
    t.after(() => viaEnv.stop())
    for (const s of [viaFlag, viaEnv]) {
      assert.equal((await get(s.port, '/latest.json')).status, 401)
      assert.equal((await get(s.port, '/latest.json', 'Authorization: Bearer wrong\r\n')).status, 401)
      assert.equal((await get(s.port, '/latest.json', `Authorization: Basic ${token}\r\n`)).status, 401)
      assert.equal((await get(s.port, '/latest.json', `Authorization: Bearer ${token}\r\n`)).status, 200)
      const objects = readdirSync(join(store, 'objects'))
      assert.equal((await get(s.port, `/objects/${objects[0]}`)).status, 401)
      assert.equal((await get(s.port, `/objects/${objects[0]}`, `Authorization: Bearer ${token}\r\n`)).status, 200)
    }
    // A replica with the token (from the environment) pulls; one without is told why it cannot.
    const replica = join(dir, 'replica-token')
    const pullArgs = ['pull', '--from', viaEnv.url, '--target', replica, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--retries', '0']
    const refused = await runCli(pullArgs, { env: { SNAPSHOT_TOKEN: '' } })
    assert.equal(refused.code, 4, refused.stderr)
    assert.match(refused.stderr, /401.*--token/)
    const ok = await runCli(pullArgs, { env: { SNAPSHOT_TOKEN: token } })
    assert.equal(ok.code, 0, ok.stderr)
    assert.deepEqual(treeDiff(source, replica), [])
  })
})
