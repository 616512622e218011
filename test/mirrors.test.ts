import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, unlinkSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { runCli, runJson, startServe } from './helpers/cli.js'
import { treeDiff, writeTree } from './helpers/tree.js'

/**
 * `pull --from A --from B`: a failover list of mirrors. The newest pointer that verifies wins; a
 * mirror that is down, stale or serves a pointer that does not verify is skipped and named, in the
 * pull's output and in `status`; objects missing from the chosen mirror come from another.
 */
interface MirrorReport {
  source: string
  status: string
  latestId: number | null
  code?: string
}
interface Pulled {
  action: string
  id: number
  mirrors?: MirrorReport[]
}

describe('mirrors: pull --from repeated', () => {
  let dir: string
  let source: string
  let store: string
  let staleStore: string
  let keys: string
  let dead: string
  let live: Awaited<ReturnType<typeof startServe>>
  let stale: Awaited<ReturnType<typeof startServe>>

  const pub = (): string => join(keys, 'snapshot.pub')
  const pull = (from: string[], target: string, ...extra: string[]) =>
    runCli(['pull', ...from.flatMap((f) => ['--from', f]), '--target', target, '--pubkey', pub(), '--swap', '--quiet', '--json', '--retries', '1', '--timeout', '5', ...extra])
  const statusOf = (m: Pulled | { mirrors: MirrorReport[] | null }, from: string): string | undefined => m.mirrors?.find((r) => r.source.startsWith(from) || from.startsWith(r.source))?.status

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-mirrors-'))
    source = join(dir, 'master')
    store = join(dir, 'store')
    staleStore = join(dir, 'stale-store')
    keys = join(dir, 'keys')
    mkdirSync(source)
    for (let i = 0; i < 20; i++) writeTree(source, { [`p/${i}.m3u`]: `${i}\n${createHash('sha256').update(String(i)).digest('hex')}\n` })
    await runJson(['keygen', '--out', keys, '--quiet'])
    const build = () => runJson(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--quiet'])
    await build() // 1
    cpSync(store, staleStore, { recursive: true }) // a mirror that stopped syncing after snapshot 1
    writeTree(source, { 'p/1.m3u': 'changed\n', 'new.m3u': 'new\n' })
    await build() // 2
    live = await startServe(store)
    stale = await startServe(staleStore)
    // a mirror that is down: a port that was just free, now closed (connection refused)
    const probe = createServer()
    await new Promise<void>((ok) => probe.listen(0, '127.0.0.1', ok))
    dead = `http://127.0.0.1:${(probe.address() as AddressInfo).port}/`
    await new Promise<void>((ok) => probe.close(() => ok()))
  })
  after(async () => {
    await live?.stop()
    await stale?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('fails over from a dead mirror to a live one, and names the dead one', async () => {
    const target = join(dir, 'r-dead')
    const r = await pull([dead, live.url], target)
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout) as Pulled
    assert.equal(out.id, 2)
    assert.equal(statusOf(out, dead), 'down')
    assert.equal(statusOf(out, live.url), 'chosen')
    assert.deepEqual(treeDiff(source, target), [])
    const human = await runCli(['pull', '--from', dead, '--from', live.url, '--target', target, '--pubkey', pub(), '--retries', '1'])
    assert.equal(human.code, 0, human.stderr)
    assert.match(human.stdout, new RegExp(`mirror ${dead.replace(/[.]/g, '\\.')}: down, skipped \\[ERR_NETWORK\\]`))

    // status, asked of the same mirrors, names them too
    const st = await runJson<{ mirrors: MirrorReport[] | null; store: { latestId?: number } }>(['status', '--target', target, '--from', dead, '--from', live.url, '--pubkey', pub()])
    assert.equal(st.store.latestId, 2)
    assert.equal(statusOf(st, dead), 'down')
    assert.equal(statusOf(st, live.url), 'chosen')
  })

  test('the newest valid pointer wins whatever the order; a stale mirror is named, and alone it cannot roll a replica back', async () => {
    const target = join(dir, 'r-stale')
    const r = await pull([stale.url, live.url], target)
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout) as Pulled
    assert.equal(out.id, 2)
    assert.equal(statusOf(out, stale.url), 'stale')
    assert.equal(statusOf(out, live.url), 'chosen')
    // only the stale mirror and a dead one left: refused, exit 6, the replica keeps snapshot 2
    const back = await pull([dead, stale.url], target)
    assert.equal(back.code, 6, back.stderr)
    assert.deepEqual(treeDiff(source, target), [])
  })

  test('a mirror whose pointer does not verify is skipped as invalid; every mirror down is exit 4', async () => {
    const foreignKeys = join(dir, 'foreign-keys')
    const foreign = join(dir, 'foreign-store')
    await runJson(['keygen', '--out', foreignKeys, '--quiet'])
    await runJson(['build', '--source', source, '--store', foreign, '--key', join(foreignKeys, 'snapshot.key'), '--quiet'])
    await runJson(['build', '--source', source, '--store', foreign, '--key', join(foreignKeys, 'snapshot.key'), '--quiet', '--full'])
    const target = join(dir, 'r-invalid')
    const r = await pull([foreign, live.url], target)
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout) as Pulled
    assert.equal(statusOf(out, foreign), 'invalid')
    assert.equal(out.id, 2)

    const none = await pull([dead, dead.replace(/\/$/, '/x/')], join(dir, 'r-none'))
    assert.equal(none.code, 4, none.stderr)
    assert.match(none.stderr, /no mirror answered/)
  })

  test('an object missing from the chosen mirror is fetched from another', async () => {
    const holey = join(dir, 'holey-store')
    cpSync(store, holey, { recursive: true })
    for (const name of readdirSync(join(holey, 'objects'))) if (name.endsWith('.tar.zst')) unlinkSync(join(holey, 'objects', name))
    const target = join(dir, 'r-holey')
    const r = await runCli(['pull', '--from', holey, '--from', live.url, '--target', target, '--pubkey', pub(), '--swap', '--json', '--retries', '1'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stderr, /the object is missing.*trying the next mirror/)
    assert.equal(statusOf(JSON.parse(r.stdout) as Pulled, holey), 'chosen') // listed first, as new as the other
    assert.deepEqual(treeDiff(source, target), [])
  })
})
