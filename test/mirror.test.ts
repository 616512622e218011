import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { runCli, runJson, startServe } from './helpers/cli.js'
import { startNginx } from './helpers/nginx.js'
import { startS3Server } from './helpers/s3-server.js'
import { pullResults, startLines } from './helpers/watch-process.js'
import { treeDiff, writeTree } from './helpers/tree.js'

/**
 * `snapshot mirror`: relays. An origin served by `snapshot serve`, a relay made by `snapshot
 * mirror` into a directory and served by `snapshot serve` or nginx, replicas pulling with
 * `--from RELAY --from ORIGIN`. A relay only ever offers what the master signed, never a pointer
 * whose objects it lacks, never an older pointer; a dead relay costs its replicas a failover.
 */
interface Mirrored {
  id: number
  from: string
  to: string
  uploaded: { objects: number; records: number; pointer: boolean; bytes: number }
  skipped: number
  deleted: string[]
  held: string[]
}
interface Pulled {
  action: string
  id: number
  mirrors?: { source: string; status: string }[]
}

describe('snapshot mirror: relays', () => {
  let dir: string
  let source: string
  let store: string
  let keys: string
  let origin: Awaited<ReturnType<typeof startServe>>
  let counter = 0
  const stops: (() => Promise<unknown>)[] = []

  const pub = (): string => join(keys, 'snapshot.pub')
  const build = (...extra: string[]) => runJson<{ id: number; kind: string }>(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--quiet', ...extra])
  const edit = (): void => writeTree(source, { [`edits/${++counter}.m3u`]: `edit ${counter}\n`, 'a.m3u': `a ${counter}\n` })
  const mirror = (from: string[], to: string, ...extra: string[]) => runCli(['mirror', ...from.flatMap((f) => ['--from', f]), '--to', to, '--pubkey', pub(), '--json', '--quiet', '--retries', '1', '--timeout', '5', ...extra])
  const mirrored = async (from: string[], to: string, ...extra: string[]): Promise<Mirrored> => {
    const r = await mirror(from, to, ...extra)
    assert.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout) as Mirrored
  }
  const pull = (from: string[], target: string, ...extra: string[]) =>
    runCli(['pull', ...from.flatMap((f) => ['--from', f]), '--target', target, '--pubkey', pub(), '--swap', '--quiet', '--json', '--retries', '1', '--timeout', '5', ...extra])
  const statusOf = (p: Pulled, url: string): string | undefined => p.mirrors?.find((m) => m.source === url || m.source === `${url}/` || url === `${m.source}/`)?.status
  const pointerId = (relay: string): number => (JSON.parse((JSON.parse(readFileSync(join(relay, 'latest.json'), 'utf8')) as { signed: string }).signed) as { latest: { id: number } }).latest.id
  const deadUrl = async (): Promise<string> => {
    const probe = createServer()
    await new Promise<void>((ok) => probe.listen(0, '127.0.0.1', ok))
    const url = `http://127.0.0.1:${(probe.address() as AddressInfo).port}/`
    await new Promise<void>((ok) => probe.close(() => ok()))
    return url
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-mirror-'))
    chmodSync(dir, 0o755) // nginx's workers run as an unprivileged user: the relay must be readable to it
    source = join(dir, 'master')
    store = join(dir, 'store')
    keys = join(dir, 'keys')
    mkdirSync(source)
    writeTree(source, { 'a.m3u': 'a\n', 'b/c.m3u': 'c\n', link: { link: 'a.m3u' }, empty: { dir: true } })
    for (let i = 0; i < 30; i++) writeTree(source, { [`p/${i}.m3u`]: `${i}\n${createHash('sha256').update(String(i)).digest('hex')}\n` })
    await runJson(['keygen', '--out', keys, '--quiet'])
    await build()
    origin = await startServe(store)
  })
  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined)
    await origin?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('origin -> mirror -> relay served by `snapshot serve` -> replica pulling RELAY then ORIGIN gets the exact tree', async () => {
    const relay = join(dir, 'relay-serve')
    const first = await mirrored([origin.url], relay)
    assert.equal(first.uploaded.pointer, true)
    assert.ok(first.uploaded.objects >= 2 && first.uploaded.records >= 1, JSON.stringify(first))
    // the relay is a store that verifies: every record and object the pointer names, signatures included
    const verified = await runCli(['verify', '--store', relay, '--pubkey', pub()])
    assert.equal(verified.code, 0, verified.stdout + verified.stderr)
    // nothing new: nothing sent, pointer unchanged
    const again = await mirrored([origin.url], relay)
    assert.equal(again.uploaded.pointer, false)
    assert.equal(again.uploaded.objects + again.uploaded.records, 0)

    const served = await startServe(relay)
    stops.push(served.stop)
    const target = join(dir, 'r-serve')
    const r = await pull([served.url, origin.url], target)
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout) as Pulled
    assert.equal(out.action, 'swapped')
    assert.equal(statusOf(out, served.url), 'chosen') // listed first, as new as the origin
    assert.deepEqual(treeDiff(source, target), [])

    // an hour later: the relay takes the delta only, and so does the replica
    edit()
    const b = await build()
    const next = await mirrored([origin.url], relay)
    assert.equal(next.id, b.id)
    assert.ok(next.skipped >= 2, JSON.stringify(next)) // the full and its record were there already
    const r2 = await pull([served.url, origin.url], target)
    assert.equal(r2.code, 0, r2.stderr)
    assert.equal((JSON.parse(r2.stdout) as Pulled).id, b.id)
    assert.deepEqual(treeDiff(source, target), [])
  })

  test('a relay served by nginx (deploy/nginx/snapshot-store.conf) serves replicas the same', async () => {
    const relay = join(dir, 'relay-nginx')
    await mirrored([origin.url], relay)
    const nginx = await startNginx(relay, join(dir, 'nginx'))
    stops.push(nginx.stop)
    const target = join(dir, 'r-nginx')
    const r = await pull([nginx.url, origin.url], target)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(statusOf(JSON.parse(r.stdout) as Pulled, nginx.url), 'chosen')
    assert.deepEqual(treeDiff(source, target), [])
  })

  test('a tampered object at the origin is refused (exit 3): the relay keeps its pointer and holds no byte of it', async () => {
    const relay = join(dir, 'relay-tamper')
    const good = await mirrored([origin.url], relay)
    const pointerBefore = readFileSync(join(relay, 'latest.json'))
    // a copy of the origin, one snapshot ahead, whose new archive has one byte flipped (same length)
    const bad = join(dir, 'store-tampered')
    cpSync(store, bad, { recursive: true })
    edit()
    const b = await runJson<{ id: number }>(['build', '--source', source, '--store', bad, '--key', join(keys, 'snapshot.key'), '--quiet'])
    const before = new Set(readdirSync(join(store, 'objects')))
    const fresh = readdirSync(join(bad, 'objects')).filter((n) => !before.has(n) && n.endsWith('.tar.zst'))
    assert.equal(fresh.length, 1)
    const file = join(bad, 'objects', fresh[0]!)
    const bytes = readFileSync(file)
    bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0xff
    writeFileSync(file, bytes)
    const badServer = await startServe(bad)
    stops.push(badServer.stop)

    const r = await mirror([badServer.url], relay)
    assert.equal(r.code, 3, r.stderr)
    assert.match(r.stderr, /ERR_CHECKSUM/)
    assert.ok(readFileSync(join(relay, 'latest.json')).equals(pointerBefore), 'the relay\'s pointer moved')
    assert.equal(pointerId(relay), good.id)
    assert.ok(b.id > good.id && !existsSync(join(relay, 'objects', fresh[0]!)))
    assert.deepEqual(readdirSync(join(relay, 'objects')).filter((n) => n.startsWith(fresh[0]!)), [], 'a part of the bad object was left behind')
    // the relay still serves what it had, and a replica of it verifies
    const target = join(dir, 'r-tamper')
    const p = await pull([relay], target)
    assert.equal(p.code, 0, p.stderr)
    assert.equal((JSON.parse(p.stdout) as Pulled).id, good.id)
    rmSync(bad, { recursive: true, force: true })
  })

  test('a mirror killed before its pointer goes up leaves the relay offering the previous snapshot, whole; run again, it completes', async () => {
    const relay = join(dir, 'relay-crash')
    const first = await mirrored([origin.url], relay)
    const pointerBefore = readFileSync(join(relay, 'latest.json'))
    edit()
    const b = await build()
    for (const at of ['publish:object#1', 'publish:pointer']) {
      const r = await runCli(['mirror', '--from', origin.url, '--to', relay, '--pubkey', pub(), '--quiet'], { env: { SNAPSHOT_CRASH_AT: at } })
      assert.equal(r.code, -1, `${at}: the mirror was not killed: ${r.stderr}`)
      assert.ok(readFileSync(join(relay, 'latest.json')).equals(pointerBefore), `${at}: the relay's pointer moved`)
      const verified = await runCli(['verify', '--store', relay, '--pubkey', pub()])
      assert.equal(verified.code, 0, `${at}: ${verified.stdout}${verified.stderr}`)
    }
    // killed at the pointer: every object and record was already in place, flushed
    const done = await mirrored([origin.url], relay)
    assert.equal(done.id, b.id)
    assert.ok(b.id > first.id)
    assert.deepEqual([done.uploaded.objects, done.uploaded.records, done.uploaded.pointer], [0, 0, true])
    const target = join(dir, 'r-crash')
    const p = await pull([relay], target)
    assert.equal(p.code, 0, p.stderr)
    assert.deepEqual(treeDiff(source, target), [])
  })

  test('an older pointer never replaces a newer one (exit 6); among several --from the newest wins', async () => {
    const relay = join(dir, 'relay-old')
    const stale = join(dir, 'store-stale')
    cpSync(store, stale, { recursive: true }) // the origin as it is now...
    edit()
    const b = await build() // ...and one snapshot later
    const now = await mirrored([origin.url], relay)
    assert.equal(now.id, b.id)
    const pointerBefore = readFileSync(join(relay, 'latest.json'))
    const r = await mirror([stale], relay)
    assert.equal(r.code, 6, r.stderr)
    assert.match(r.stderr, /ERR_ROLLBACK_REFUSED.*refusing to move the relay back/)
    assert.ok(readFileSync(join(relay, 'latest.json')).equals(pointerBefore))
    // the stale mirror listed first: the origin's newer pointer wins, the relay stays put
    const both = await mirrored([stale, origin.url], relay)
    assert.equal(both.id, b.id)
    assert.equal(both.uploaded.pointer, false)
  })

  test('a relay that dies mid-hour costs its replicas only a failover to the origin (a pull, and a watch)', async () => {
    const relay = join(dir, 'relay-dies')
    await mirrored([origin.url], relay)
    const served = await startServe(relay)
    stops.push(served.stop)
    const once = join(dir, 'r-dies-once')
    const watched = join(dir, 'r-dies-watch')
    const first = await pull([served.url, origin.url], once)
    assert.equal(first.code, 0, first.stderr)
    const watch = startLines(['pull', '--watch', '--from', served.url, '--from', origin.url, '--target', watched, '--pubkey', pub(), '--swap', '--json', '--interval', '1', '--max-backoff', '2', '--timeout', '5', '--retries', '1'])
    stops.push(() => watch.stop('SIGKILL'))
    const id0 = (JSON.parse(first.stdout) as Pulled).id
    await watch.waitFor((l) => pullResults([l]).some((p) => p.id === id0 && p.action === 'swapped'), `the watch to swap ${id0}`, 60_000)

    await served.stop() // the relay's server is gone; the master publishes the next hour
    edit()
    const b = await build()
    const r = await pull([served.url, origin.url], once)
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout) as Pulled
    assert.equal(out.id, b.id)
    assert.equal(statusOf(out, served.url), 'down')
    assert.equal(statusOf(out, origin.url), 'chosen')
    assert.deepEqual(treeDiff(source, once), [])
    // the watch probes the relay, finds it down, asks the origin, and pulls from it
    await watch.waitFor((l) => pullResults([l]).some((p) => p.id === b.id && p.action === 'swapped'), `the watch to swap ${b.id} through the origin`, 60_000)
    assert.deepEqual(treeDiff(source, watched), [])
    assert.equal(await watch.stop(), 0)
  })

  test('mirror --watch follows two builds and exits 0 on SIGTERM', async () => {
    const relay = join(dir, 'relay-watch')
    const w = startLines(['mirror', '--watch', '--from', origin.url, '--to', relay, '--pubkey', pub(), '--json', '--interval', '1', '--max-backoff', '2', '--timeout', '5'])
    stops.push(() => w.stop('SIGKILL'))
    const passes = (): Mirrored[] => w.lines.filter((l) => l.startsWith('out: {')).map((l) => JSON.parse(l.slice(5)) as Mirrored)
    const start = pointerId(store)
    await w.waitFor((l) => l.startsWith('out: {') && (JSON.parse(l.slice(5)) as Mirrored).id === start, `the first pass (snapshot ${start})`, 60_000)
    for (let i = 0; i < 2; i++) {
      edit()
      const b = await build()
      await w.waitFor((l) => l.startsWith('out: {') && (JSON.parse(l.slice(5)) as Mirrored).id === b.id, `the pass for snapshot ${b.id}`, 60_000)
      assert.equal(pointerId(relay), b.id)
    }
    assert.ok(passes().every((p) => p.uploaded.pointer || p.uploaded.objects === 0))
    assert.ok(w.lines.some((l) => /long-poll/.test(l)), w.lines.join('\n'))
    assert.equal(await w.stop('SIGTERM'), 0)
    assert.ok(w.lines.some((l) => /stopped/.test(l)))
    const verified = await runCli(['verify', '--store', relay, '--pubkey', pub()])
    assert.equal(verified.code, 0, verified.stdout + verified.stderr)
  })

  test('the relay follows the origin\'s chain: what it no longer names goes one pointer later', async () => {
    const relay = join(dir, 'relay-prune')
    await mirrored([origin.url], relay)
    const objectsBefore = new Set(readdirSync(join(relay, 'objects')))
    edit()
    await build('--full') // a new full: the chain now starts there
    const held = await mirrored([origin.url], relay)
    assert.deepEqual(held.deleted, [])
    assert.ok(held.held.length > 0, JSON.stringify(held)) // the previous pointer still names them
    edit()
    await build()
    const pruned = await mirrored([origin.url], relay)
    assert.ok(pruned.deleted.length > 0, JSON.stringify(pruned))
    const left = new Set(readdirSync(join(relay, 'objects')))
    assert.ok([...objectsBefore].some((n) => !left.has(n)))
    const verified = await runCli(['verify', '--store', relay, '--pubkey', pub()])
    assert.equal(verified.code, 0, verified.stdout + verified.stderr)
    const keep = join(dir, 'relay-keep')
    await mirrored([origin.url], keep, '--no-delete')
    assert.equal((await mirrored([origin.url], keep, '--no-delete')).deleted.length, 0)
  })

  test('mirror into S3 (the tests\' signature-checking server), then pull from the bucket', async () => {
    const s3 = await startS3Server()
    stops.push(s3.stop)
    const to = `s3://${s3.bucket}/relay`
    const flags = ['--endpoint', s3.endpoint, '--path-style']
    const r = await runCli(['mirror', '--from', origin.url, '--to', to, '--pubkey', pub(), '--json', '--quiet', ...flags], { env: s3.env() })
    assert.equal(r.code, 0, r.stderr)
    const m = JSON.parse(r.stdout) as Mirrored
    assert.equal(m.uploaded.pointer, true)
    const target = join(dir, 'r-s3')
    const p = await runCli(['pull', '--from', to, '--target', target, '--pubkey', pub(), '--swap', '--quiet', '--json', ...flags], { env: s3.env() })
    assert.equal(p.code, 0, p.stderr)
    assert.deepEqual(treeDiff(source, target), [])
    const again = await runCli(['mirror', '--from', origin.url, '--to', to, '--pubkey', pub(), '--json', '--quiet', ...flags], { env: s3.env() })
    assert.equal(again.code, 0, again.stderr)
    assert.equal((JSON.parse(again.stdout) as Mirrored).uploaded.objects, 0)
    // a wrong secret: refused by the server, exit 4
    const bad = await runCli(['mirror', '--from', origin.url, '--to', to, '--pubkey', pub(), ...flags], { env: s3.env({ secretAccessKey: 'not-the-secret' }) })
    assert.equal(bad.code, 4, bad.stderr)
  })

  test('publish --to DIR writes a store by the same path: a replica pulls from it, and it refuses to go back', async () => {
    const copy = join(dir, 'published')
    const r = await runJson<Mirrored>(['publish', '--store', store, '--to', copy, '--quiet'])
    assert.equal(r.uploaded.pointer, true)
    assert.equal(pointerId(copy), pointerId(store))
    const verified = await runCli(['verify', '--store', copy, '--pubkey', pub()])
    assert.equal(verified.code, 0, verified.stdout + verified.stderr)
    const target = join(dir, 'r-published')
    const p = await pull([copy], target)
    assert.equal(p.code, 0, p.stderr)
    assert.deepEqual(treeDiff(source, target), [])
    assert.equal((await runCli(['publish', '--store', store, '--to', store])).code, 2)
    // a store behind the copy: refused (exit 6), the copy keeps its pointer
    const behind = join(dir, 'store-behind')
    cpSync(store, behind, { recursive: true })
    edit()
    await build()
    await runJson(['publish', '--store', store, '--to', copy, '--quiet'])
    const back = await runCli(['publish', '--store', behind, '--to', copy])
    assert.equal(back.code, 6, back.stderr)
    assert.equal(pointerId(copy), pointerId(store))
  })

  test('bad input: documented exit codes, and nothing written', async () => {
    const relay = join(dir, 'relay-bad')
    const cases: [string[], number, RegExp][] = [
      [['mirror', '--from', origin.url, '--pubkey', pub()], 2, /--to/],
      [['mirror', '--to', relay, '--pubkey', pub()], 2, /--from/],
      [['mirror', '--from', origin.url, '--to', 'ftp://example/x', '--pubkey', pub()], 2, /expected a directory or s3/],
      [['mirror', '--from', origin.url, '--to', 's3://A_B/x', '--pubkey', pub()], 2, /s3:\/\/BUCKET/],
      [['mirror', '--from', store, '--to', store, '--pubkey', pub()], 2, /also a --from/],
      [['mirror', '--from', origin.url, '--to', store, '--pubkey', pub()], 2, /a master's store/],
      [['mirror', '--from', origin.url, '--to', relay, '--pubkey', pub(), '--limit-rate', '1'], 2, /lowest rate/],
      [['mirror', '--from', origin.url, '--to', relay, '--pubkey', join(keys, 'snapshot.key')], 2, /PRIVATE key/],
      [['mirror', '--from', await deadUrl(), '--to', relay, '--pubkey', pub(), '--retries', '0', '--timeout', '2'], 4, /ERR_NETWORK/],
      [['mirror', '--from', join(dir, 'master'), '--to', relay, '--pubkey', pub()], 10, /no snapshot yet/],
    ]
    const foreign = join(dir, 'foreign-keys')
    await runJson(['keygen', '--out', foreign, '--quiet'])
    cases.push([['mirror', '--from', origin.url, '--to', relay, '--pubkey', join(foreign, 'snapshot.pub')], 3, /ERR_SIGNATURE/])
    for (const [args, code, message] of cases) {
      const r = await runCli(args)
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, message, args.join(' '))
    }
    assert.ok(!existsSync(join(relay, 'latest.json')))
    // another mirror into the same directory (this process stands for it: alive, on this host)
    const locked = join(dir, 'relay-locked')
    mkdirSync(locked)
    writeFileSync(join(locked, '.mirror.lock'), `${process.pid} ${hostname()} ${new Date().toISOString()}\n`)
    const busy = await runCli(['mirror', '--from', origin.url, '--to', locked, '--pubkey', pub()])
    assert.equal(busy.code, 11, busy.stderr)
    assert.match(busy.stderr, /ERR_LOCKED/)
    assert.ok(!existsSync(join(locked, 'latest.json')))
    rmSync(join(locked, '.mirror.lock'))
    assert.equal((await mirror([origin.url], locked)).code, 0)
    assert.ok(!existsSync(join(locked, '.mirror.lock')), 'the lock outlived the mirror')
  })
})
