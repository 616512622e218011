import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test, type TestContext } from 'node:test'
import { runCli, runJson } from './helpers/cli.js'
import { startFaultServer, type FaultServer } from './helpers/fault-server.js'
import { describeTree, treeDiff, writeTree } from './helpers/tree.js'
import { freePort } from './helpers/free-port.js'

/**
 * What goes wrong between a replica and its store, and on either disk, through the real CLI: each
 * case ends in a clear error with its documented exit code (README "Exit codes") and nothing live
 * damaged, or in success after retries. The store is served by a test server that misbehaves on
 * demand (helpers/fault-server.ts); disks fill up on small tmpfs mounts.
 */
describe('faults', () => {
  let dir: string
  let source: string
  let store: string
  let keys: string
  let server: FaultServer
  const copies = new Map<number, string>()
  let latest = 0
  const mounts: string[] = []

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-faults-'))
    source = join(dir, 'master')
    store = join(dir, 'store')
    keys = join(dir, 'keys')
    const files: Record<string, string> = {}
    for (let i = 0; i < 150; i++) files[`d${i % 6}/p${i}.m3u`] = `#EXTM3U\n#EXTINF:${i},Artist\nhttp://example.invalid/${i}.mp3\n`
    writeTree(source, files)
    await runJson(['keygen', '--out', keys])
    await nextSnapshot()
    server = await startFaultServer(store)
  })
  after(async () => {
    await server?.close()
    for (const m of mounts.splice(0)) unmount(m)
    rmSync(dir, { recursive: true, force: true })
  })

  /** A new snapshot whose archive carries a fresh 600 KB of incompressible bytes. */
  async function nextSnapshot(blobBytes = 600_000, ...buildFlags: string[]): Promise<number> {
    writeFileSync(join(source, 'blob.bin'), randomBytes(blobBytes))
    writeFileSync(join(source, 'd0/p0.m3u'), `#EXTM3U\nround ${latest + 1}\n`)
    const b = await runJson<{ id: number }>(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), ...buildFlags])
    const copy = join(dir, `master-at-${b.id}`)
    assert.equal(spawnSync('cp', ['-a', source, copy]).status, 0)
    copies.set(b.id, copy)
    latest = b.id
    return b.id
  }

  const pullArgs = (from: string, target: string, ...extra: string[]) => ['pull', '--from', from, '--target', target, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--max-delete', '100', ...extra]
  const pull = (target: string, ...extra: string[]) => runCli(pullArgs(server.url, target, ...extra))
  const assertServes = (target: string, id: number) => assert.deepEqual(treeDiff(copies.get(id)!, target), [], `${target} should serve snapshot ${id}`)
  /** The archives of snapshot `id` (its delta, and its full when it has one): a path pattern and their sizes. */
  const archivesOf = (id: number): { match: RegExp; length: (path: string) => number } => {
    const record = JSON.parse(JSON.parse(readFileSync(join(store, 'snapshots', `${id}.json`), 'utf8')).signed).snapshot
    const refs: { path: string; length: number }[] = [record.delta, record.full].filter(Boolean).map((p: { archive: { path: string; length: number } }) => p.archive)
    return {
      match: new RegExp(`/(${refs.map((r) => r.path.replace(/\./g, '\\.')).join('|')})$`),
      length: (path) => refs.find((r) => path.endsWith(r.path))!.length,
    }
  }

  /** The replica the network cases share, brought to snapshot `latest` with no fault armed. */
  async function liveReplica(): Promise<string> {
    const target = join(dir, 'replica')
    server.reset()
    const r = await pull(target)
    assert.equal(r.code, 0, r.stderr)
    assertServes(target, latest)
    return target
  }

  test('server down: connection refused ends in exit 4 after the retries, live tree intact', async (t) => {
    const target = await liveReplica()
    const port = await freePort()
    const started = Date.now()
    const r = await runCli(pullArgs(`http://127.0.0.1:${port}`, target, '--retries', '2', '--timeout', '1'))
    assert.equal(r.code, 4, r.stderr)
    assert.match(r.stderr, /ERR_NETWORK.*ECONNREFUSED.*gave up after 3 attempts/s)
    t.diagnostic(`server down: exit ${r.code}: ${errorLine(r.stderr)}`)
    assert.ok(Date.now() - started < 20_000)
    assertServes(target, latest)
  })

  test('HTTP 503 and 500 for a while, then recovery: the pull succeeds after retries', async (t) => {
    const target = await liveReplica()
    const id = await nextSnapshot()
    server.reset()
    server.inject({ fault: { kind: 'status', code: 503, retryAfter: 0 }, times: 2 }) // latest.json, twice
    server.inject({ fault: { kind: 'status', code: 500 }, times: 2, match: /\.zst$/ }) // then the objects
    const r = await pull(target, '--retries', '5', '--json')
    assert.equal(r.code, 0, r.stderr)
    assert.equal(server.log.filter((e) => e.fault === 'status').length, 4)
    assertServes(target, id)

    // An outage that outlasts the retries: exit 4, and the replica keeps serving what it served.
    const next = await nextSnapshot()
    server.reset()
    server.inject({ fault: { kind: 'status', code: 503 }, times: 1000, match: /\.zst$/ })
    const down = await pull(target, '--retries', '1')
    assert.equal(down.code, 4, down.stderr)
    assert.match(down.stderr, /HTTP 503/)
    t.diagnostic(`4 errors (503, 503, 500, 500) then recovery: exit 0; an outage past --retries 1: exit ${down.code}: ${errorLine(down.stderr)}`)
    assertServes(target, id)
    server.reset()
    const again = await pull(target)
    assert.equal(again.code, 0, again.stderr)
    assertServes(target, next)
  })

  test('a stall mid-body trips --timeout and the retry resumes; a stall that never ends is exit 4', async (t) => {
    const target = await liveReplica()
    let id = await nextSnapshot()
    const isArchive = archivesOf(id).match
    server.reset()
    server.inject({ fault: { kind: 'stallAfter', bytes: 100_000 }, times: 1, match: isArchive })
    let started = Date.now()
    const r = await pull(target, '--timeout', '1')
    assert.equal(r.code, 0, r.stderr)
    assert.ok(Date.now() - started < 20_000)
    const tries = server.log.filter((e) => isArchive.test(e.path))
    assert.equal(tries.length, 2)
    assert.equal(tries[1]!.range, 'bytes=100000-', 'the retry continues where the stall left off')
    assertServes(target, id)

    id = await nextSnapshot()
    const stuck = archivesOf(id).match
    server.reset()
    server.inject({ fault: { kind: 'stallAfter', bytes: 50_000 }, times: 1000, match: stuck })
    started = Date.now()
    const down = await pull(target, '--timeout', '1', '--retries', '1')
    assert.equal(down.code, 4, down.stderr)
    assert.match(down.stderr, /stalled|no data/)
    assert.ok(Date.now() - started < 20_000, 'the timeout must fire')
    t.diagnostic(`a stall that never ends, --timeout 1 --retries 1: exit ${down.code} after ${((Date.now() - started) / 1000).toFixed(1)} s: ${errorLine(down.stderr)}`)
    assertServes(target, id - 1)
    // Two attempts got 50000 bytes each before stalling: the next run picks them up.
    server.reset()
    const again = await pull(target)
    assert.equal(again.code, 0, again.stderr)
    assert.equal(server.log.find((e) => stuck.test(e.path))?.range, 'bytes=100000-')
    assertServes(target, id)
  })

  test('a connection reset halfway: the next request carries Range and the download resumes', async (t) => {
    const target = await liveReplica()
    const id = await nextSnapshot()
    const archives = archivesOf(id)
    const half = 300_000 // each archive carries the 600 KB blob
    server.reset()
    server.inject({ fault: { kind: 'resetAfter', bytes: half }, times: 1, match: archives.match })
    const r = await pull(target)
    assert.equal(r.code, 0, r.stderr)
    const tries = server.log.filter((e) => archives.match.test(e.path))
    assert.equal(tries.length, 2, JSON.stringify(tries))
    assert.equal(tries[0]!.fault, 'resetAfter')
    assert.equal(tries[1]!.path, tries[0]!.path)
    const length = archives.length(tries[0]!.path)
    const from = Number(/^bytes=(\d+)-$/.exec(tries[1]!.range ?? '')?.[1] ?? 0)
    assert.ok(from > 0 && from <= half, `resumed at byte ${from} of ${length}`)
    const sent = server.bytesSent(archives.match)
    // Not exactly `length`: bytes still in the client's socket buffer when the RST came are lost.
    assert.ok(sent < 2 * length, `${sent} bytes sent for a ${length}-byte object: a restart, not a resume`)
    t.diagnostic(`reset after ${half} of ${length} bytes: resumed with Range bytes=${from}-; ${sent} bytes sent in all (${(sent / length).toFixed(2)}x the object)`)
    assertServes(target, id)
  })

  test('a slow drip keeps the download alive past --timeout (it bounds stalls, not transfers)', async () => {
    const target = await liveReplica()
    const id = await nextSnapshot()
    const isArchive = archivesOf(id).match
    server.reset()
    server.inject({ fault: { kind: 'drip', chunk: 48 * 1024, everyMs: 150 }, times: 1, match: isArchive })
    const started = Date.now()
    const r = await pull(target, '--timeout', '1')
    assert.equal(r.code, 0, r.stderr)
    const tries = server.log.filter((e) => isArchive.test(e.path))
    assert.deepEqual(tries.map((e) => e.fault), ['drip'], 'one request, no retry: a drip is not a stall')
    assert.ok(Date.now() - started > 1500, 'the drip should take longer than the timeout')
    assertServes(target, id)
  })

  test('disk full on the replica: exit 5, staging cleaned, live tree intact; the next pull with room succeeds', async (t) => {
    const fs = mountSmall(t, join(dir, 'replica-fs'), '3m')
    if (!fs) return
    const target = join(dir, 'r-full')
    const state = join(fs, 'state')
    await nextSnapshot(600_000, '--full') // so the first pull is one full archive: about 2 of the 3 MB
    server.reset()
    const first = await pull(target, '--state', state)
    assert.equal(first.code, 0, first.stderr)
    const live = latest
    assertServes(target, live)
    // The new tree needs another whole copy beside the live one, plus a bigger download: no room.
    const id = await nextSnapshot(900_000)
    const r = await pull(target, '--state', state)
    assert.equal(r.code, 5, r.stderr)
    assert.match(r.stderr, /ERR_NO_SPACE.*disk is full/)
    t.diagnostic(`replica disk full: exit ${r.code}: ${errorLine(r.stderr)}`)
    assertServes(target, live)
    const stateJson = JSON.parse(readFileSync(join(state, 'state.json'), 'utf8'))
    assert.equal(stateJson.live.id, live)
    assert.equal(stateJson.lastPull.code, 'ERR_NO_SPACE')
    const staging = Object.keys(stateJson.slots).filter((s) => s !== stateJson.live.slot)
    for (const s of staging) {
      assert.equal(stateJson.slots[s].status, 'empty', `tree ${s} should have been cleaned up`)
      const tree = join(state, 'trees', s)
      assert.ok(!existsSync(tree) || readdirSync(tree).length === 0, `tree ${s} still holds files`)
    }
    assert.deepEqual(readdirSync(join(state, 'objects')).filter((n) => n.endsWith('.part')), [], 'no partial download left')
    assert.ok(!existsSync(join(state, 'trash')))

    remount(fs, '64m')
    const again = await pull(target, '--state', state)
    assert.equal(again.code, 0, again.stderr)
    assertServes(target, id)
  })

  test('disk full on the master: exit 5, the store stays valid; the next build with room succeeds', async (t) => {
    const fs = mountSmall(t, join(dir, 'master-fs'), '2m')
    if (!fs) return
    const src = join(dir, 'master-b')
    assert.equal(spawnSync('cp', ['-a', source, src]).status, 0)
    const smallStore = join(fs, 'store')
    const build = () => runCli(['build', '--source', src, '--store', smallStore, '--key', join(keys, 'snapshot.key')])
    const verify = () => runCli(['verify', '--store', smallStore, '--pubkey', join(keys, 'snapshot.pub')])
    const first = await build()
    assert.equal(first.code, 0, first.stderr)
    writeFileSync(join(src, 'huge.bin'), randomBytes(2_500_000))
    const r = await build()
    assert.equal(r.code, 5, r.stderr)
    assert.match(r.stderr, /ERR_NO_SPACE/)
    t.diagnostic(`master disk full: exit ${r.code}: ${errorLine(r.stderr)}`)
    const v = await verify()
    assert.equal(v.code, 0, v.stdout + v.stderr)
    assert.deepEqual(readdirSync(join(smallStore, 'objects')).filter((n) => n.endsWith('.tmp')), [], 'no temp file left to fill the disk')
    assert.ok(!existsSync(join(smallStore, '.state', 'build.lock')), 'the lock is released')

    remount(fs, '64m')
    const again = await build()
    assert.equal(again.code, 0, again.stderr)
    assert.equal((await verify()).code, 0)
    const replica = join(dir, 'r-from-small-store')
    const p = await runCli(pullArgs(smallStore, replica))
    assert.equal(p.code, 0, p.stderr)
    assert.deepEqual(treeDiff(src, replica), [])
    assert.ok(describeTree(replica).has('huge.bin'))
  })

  /** A tmpfs of `size` at `path`, unmounted after the test; null (test skipped) where mounts are not allowed. */
  function mountSmall(t: TestContext, path: string, size: string): string | null {
    mkdirSync(path, { recursive: true })
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', path], { encoding: 'utf8' })
    if (r.status !== 0) {
      t.skip(`cannot mount a small tmpfs here (${(r.stderr || r.error?.message || '').trim()}): needs root or CAP_SYS_ADMIN`)
      return null
    }
    mounts.push(path)
    t.after(() => {
      const i = mounts.indexOf(path)
      if (i >= 0) mounts.splice(i, 1)
      unmount(path)
    })
    return path
  }
})

function errorLine(stderr: string): string {
  return stderr.split('\n').find((l) => l.includes('error')) ?? stderr.trim().split('\n').at(-1) ?? ''
}

function remount(path: string, size: string): void {
  const r = spawnSync('mount', ['-o', `remount,size=${size}`, path], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
}

function unmount(path: string): void {
  if (spawnSync('umount', [path]).status !== 0) spawnSync('umount', ['-l', path])
}

