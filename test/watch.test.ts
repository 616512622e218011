/**
 * `snapshot pull --watch`, end to end: the real CLI against a real `snapshot serve` (and nginx, a
 * static host that ignores the long-poll hint) on 127.0.0.1. Orders of events and request counts
 * are asserted, never wall times.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { runCli, runJson } from './helpers/cli.js'
import { treeDiff, writeTree } from './helpers/tree.js'
import { pullResults, startLines, startLoggedServe, type Lines } from './helpers/watch-process.js'
import { freePort } from './helpers/free-port.js'

interface Fixture {
  dir: string
  source: string
  store: string
  key: string
  pub: string
  target: string
  build(files?: Record<string, string>, key?: string): Promise<number>
}

async function fixture(t: TestContext): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-watch-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const source = join(dir, 'source')
  const store = join(dir, 'store')
  await runJson(['keygen', '--out', join(dir, 'keys')])
  const f: Fixture = {
    dir,
    source,
    store,
    key: join(dir, 'keys/snapshot.key'),
    pub: join(dir, 'keys/snapshot.pub'),
    target: join(dir, 'replica/live'),
    async build(files = {}, key = f.key) {
      writeTree(source, files)
      const r = await runJson<{ id: number }>(['build', '--source', source, '--store', store, '--key', key, '--quiet'])
      return r.id
    },
  }
  await f.build({ 'a/one.m3u': '#EXTM3U\none\n', 'a/two.m3u': '#EXTM3U\ntwo\n', 'b/three.m3u': '#EXTM3U\nthree\n' })
  return f
}

function watch(t: TestContext, f: Fixture, from: string, extra: string[] = []): Lines {
  const w = startLines(['pull', '--watch', '--from', from, '--target', f.target, '--pubkey', f.pub, '--swap', '--json', '--interval', '1', '--max-backoff', '1', ...extra])
  t.after(() => w.stop('SIGKILL'))
  return w
}

function swapped(w: Lines, id: number): Promise<string> {
  return w.waitFor((l) => l.startsWith('out: {') && /"action":"swapped"/.test(l) && JSON.parse(l.slice(5)).id === id, `the swap of snapshot ${id}`)
}

/** Request-log lines of the server for the pointer: `GET /latest.json?wait=30 304 0 held 1.00 s`. */
function pointerRequests(serve: Lines): string[] {
  return serve.lines.filter((l) => /^err: snapshot: GET \/latest\.json/.test(l))
}

test('with the long-poll, a watch swaps a new build through a request the server held, and exits 0 on SIGTERM', async (t) => {
  const f = await fixture(t)
  const serve = await startLoggedServe(f.store)
  t.after(() => serve.stop('SIGKILL'))
  const w = watch(t, f, serve.url)
  await swapped(w, 1)
  // The watch's next probe is a long-poll the server holds; publish while it is held. (The pull
  // takes the pointer its probe just brought, without asking again: its last request is the archive.)
  await serve.waitFor((l) => /GET \/objects\/[0-9a-f]{64}\.tar\.zst 200 /.test(l), 'the pull to fetch the archive')
  const before = serve.lines.length
  const builtAt = Date.now()
  const id = await f.build({ 'b/four.m3u': '#EXTM3U\nfour\n' })
  const line = await swapped(w, id)
  const answer = await serve.waitFor((l) => /GET \/latest\.json\?wait=30 200 \d+ held /.test(l), 'the held long-poll to be answered with the new pointer', 5_000, before)
  // The first probe, with no ETag yet, is answered at once; every later one was held.
  const probes = pointerRequests(serve).filter((l) => l.includes('?wait='))
  assert.ok(probes.length >= 2 && probes.slice(1).every((l) => / held /.test(l)), `every long-poll was held:\n${probes.join('\n')}`)
  assert.ok(answer)
  // Order: the held request delivered the pointer, then the watch pulled, then it swapped.
  const pulling = w.lines.lastIndexOf('err: snapshot: a new pointer: pulling')
  assert.ok(pulling >= 0 && pulling < w.lines.indexOf(line))
  const result = JSON.parse(line.slice(5)) as { swappedAtMs: number }
  t.diagnostic(`build start to swap: ${result.swappedAtMs - builtAt} ms (not asserted)`)
  assert.deepEqual(treeDiff(f.source, f.target), [])
  const idle = Date.now()
  assert.equal(await w.stop('SIGTERM'), 0)
  t.diagnostic(`SIGTERM while idle (in a long-poll) to exit: ${Date.now() - idle} ms`)
  assert.ok(w.lines.includes('err: snapshot: stopped'))
})

test('against a static host that ignores the hint (nginx), the watch polls at the interval with 304s and swaps a new build', async (t) => {
  const f = await fixture(t)
  const nginx = await startNginx(t, f.store, f.dir)
  const w = watch(t, f, nginx.url)
  await swapped(w, 1)
  const id = await f.build({ 'c/five.m3u': '#EXTM3U\nfive\n' })
  await swapped(w, id)
  // Let a few polls go by, then count them: one per interval, never a hot loop.
  const start = nginx.pointerRequests().length
  const t0 = Date.now()
  await new Promise((r) => setTimeout(r, 3_500))
  const polls = nginx.pointerRequests().slice(start)
  const seconds = (Date.now() - t0) / 1000
  assert.ok(polls.length >= 1, 'it keeps checking')
  assert.ok(polls.length <= Math.ceil(seconds) + 2, `${polls.length} checks in ${seconds} s at --interval 1:\n${polls.join('\n')}`)
  assert.ok(polls.every((l) => / 304 /.test(l)), `unchanged pointer: 304s only:\n${polls.join('\n')}`)
  assert.deepEqual(treeDiff(f.source, f.target), [])
  assert.equal(await w.stop('SIGTERM'), 0)
})

test('the origin killed mid-watch and brought back on the same port: one line down, one line back, and the next snapshot swapped', async (t) => {
  const f = await fixture(t)
  const serve = await startLoggedServe(f.store)
  const w = watch(t, f, serve.url)
  await swapped(w, 1)
  await serve.stop('SIGKILL')
  await w.waitFor((l) => /the store is unreachable/.test(l), 'the watch to notice')
  const id = await f.build({ 'a/one.m3u': '#EXTM3U\none, changed\n' })
  // Several backoff rounds pass while it is down: still one line.
  await new Promise((r) => setTimeout(r, 2_500))
  const again = await startLoggedServe(f.store, serve.port)
  t.after(() => again.stop('SIGKILL'))
  await swapped(w, id)
  assert.equal(w.lines.filter((l) => /unreachable/.test(l)).length, 1, w.lines.join('\n'))
  assert.equal(w.lines.filter((l) => /the store answers again$/.test(l)).length, 1, w.lines.join('\n'))
  assert.deepEqual(treeDiff(f.source, f.target), [])
  assert.equal(await w.stop('SIGTERM'), 0)
})

test('a refused snapshot (foreign signature) is fetched once, not retried hot, and the next good one is swapped', async (t) => {
  const f = await fixture(t)
  const serve = await startLoggedServe(f.store)
  t.after(() => serve.stop('SIGKILL'))
  const w = watch(t, f, serve.url)
  await swapped(w, 1)
  await runJson(['keygen', '--out', join(f.dir, 'other')])
  const before = w.lines.length
  await f.build({ 'a/evil.m3u': 'evil\n' }, join(f.dir, 'other/snapshot.key'))
  await w.waitFor((l) => /refused: .*waiting for the next publication/.test(l), 'the refusal')
  await new Promise((r) => setTimeout(r, 3_000)) // several intervals
  const pulls = w.lines.slice(before).filter((l) => l === 'err: snapshot: a new pointer: pulling')
  assert.equal(pulls.length, 1, `the refused pointer was pulled once:\n${w.lines.slice(before).join('\n')}`)
  assert.equal(w.lines.filter((l) => /refused/.test(l)).length, 1)
  assert.ok(!pullResults(w.lines).some((r) => r.id !== 1), 'nothing else went live')
  const id = await f.build({ 'a/good.m3u': '#EXTM3U\ngood\n' })
  await swapped(w, id)
  assert.deepEqual(treeDiff(f.source, f.target), [])
  assert.equal(await w.stop('SIGTERM'), 0)
})

test('SIGTERM during a pull lets it finish and swap, then exits 0', async (t) => {
  const f = await fixture(t)
  const serve = await startLoggedServe(f.store)
  t.after(() => serve.stop('SIGKILL'))
  const marker = join(f.dir, 'hook-started')
  // The pre-swap hook marks that the pull is under way, then takes a while.
  const w = watch(t, f, serve.url, ['--pre-swap', `touch ${marker}; sleep 2`])
  await w.waitFor((l) => l === 'err: snapshot: a new pointer: pulling', 'the first pull to start')
  await waitForFile(marker)
  w.child.kill('SIGTERM')
  const code = await w.exited()
  assert.equal(code, 0, w.lines.join('\n'))
  assert.ok(w.lines.some((l) => l.includes('SIGTERM: stopping once the pull in progress finishes')), w.lines.join('\n'))
  assert.deepEqual(pullResults(w.lines).map((r) => [r.action, r.id]), [['swapped', 1]])
  assert.deepEqual(treeDiff(f.source, f.target), [])
})

test('a local store directory is watched by the pointer file\'s stat', async (t) => {
  const f = await fixture(t)
  const w = watch(t, f, f.store)
  await swapped(w, 1)
  const id = await f.build({ 'd/six.m3u': '#EXTM3U\nsix\n' })
  await swapped(w, id)
  assert.deepEqual(treeDiff(f.source, f.target), [])
  assert.equal(await w.stop('SIGTERM'), 0)
})

test('a usage error during a pull (the --pubkey file gone) ends the watch with exit 2, the live tree untouched', async (t) => {
  const f = await fixture(t)
  const serve = await startLoggedServe(f.store)
  t.after(() => serve.stop('SIGKILL'))
  const w = watch(t, f, serve.url)
  await swapped(w, 1)
  rmSync(f.pub)
  await f.build({ 'a/one.m3u': 'changed\n' })
  assert.equal(await w.exited(), 2, w.lines.join('\n'))
  assert.ok(w.lines.some((l) => /cannot read --pubkey .*stopping the watch/.test(l)), w.lines.join('\n'))
  assert.deepEqual(pullResults(w.lines).map((r) => r.id), [1])
  assert.equal(readFileSync(join(f.target, 'a/one.m3u'), 'utf8'), '#EXTM3U\none\n')
})

test('--watch with --cron is a usage error (exit 2), and nothing is pulled', async (t) => {
  const f = await fixture(t)
  const r = await runCli(['pull', '--watch', '--cron', '* * * * *', '--from', f.store, '--target', f.target, '--pubkey', f.pub, '--swap'])
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, /--watch and --cron/)
  assert.deepEqual(pullResults(r.stdout.split('\n').map((l) => `out: ${l}`)), [])
})

async function waitForFile(path: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      readFileSync(path)
      return
    } catch {
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  throw new Error(`${path} never appeared`)
}


/** nginx serving the store as plain static files, on 127.0.0.1, in the foreground. */
async function startNginx(t: TestContext, store: string, dir: string): Promise<{ url: string; pointerRequests(): string[] }> {
  const { execFileSync } = await import('node:child_process')
  try {
    execFileSync('nginx', ['-v'], { stdio: 'ignore' })
  } catch {
    throw new Error('nginx is missing: run scripts/test-deps.sh (as root) to install it')
  }
  const prefix = join(dir, 'nginx')
  const log = join(prefix, 'access.log')
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    rmSync(prefix, { recursive: true, force: true })
    execFileSync('mkdir', ['-p', prefix])
    writeFileSync(
      join(prefix, 'nginx.conf'),
      `${process.getuid?.() === 0 ? 'user root;\n' : ''}daemon off;\nworker_processes 1;\npid ${prefix}/nginx.pid;\nerror_log ${prefix}/error.log;\n` +
        `events { worker_connections 64; }\n` +
        `http {\n  access_log ${log};\n  client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy; fastcgi_temp_path ${prefix}/fastcgi; uwsgi_temp_path ${prefix}/uwsgi; scgi_temp_path ${prefix}/scgi;\n` +
        `  server { listen 127.0.0.1:${port}; root ${store}; location / { } }\n}\n`,
    )
    const child = spawn('nginx', ['-p', prefix, '-c', join(prefix, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    t.after(() => void child.kill('SIGTERM'))
    const up = await waitForListen(port, child)
    if (up) {
      return {
        url: `http://127.0.0.1:${port}`,
        pointerRequests: () => {
          try {
            return readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('GET /latest.json?wait='))
          } catch {
            return []
          }
        },
      }
    }
    if (!/Address already in use/.test(stderr)) throw new Error(`nginx did not start: ${stderr}`)
  }
  throw new Error('nginx found no free port')
}

async function waitForListen(port: number, child: ReturnType<typeof spawn>): Promise<boolean> {
  const { connect } = await import('node:net')
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) return false
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return false
}
