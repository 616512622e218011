import assert from 'node:assert/strict'
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { openProbes } from '../src/replica/failover-probe.js'
import { runJson, startServe } from './helpers/cli.js'
import { writeTree } from './helpers/tree.js'

/**
 * The watch's probe over `--from RELAY --from ORIGIN` (replica/failover-probe.ts), against real
 * `snapshot serve` processes: every mirror is asked at once, and the first that offers a pointer
 * the replica has not handled ends the check; a mirror that is down, or has no pointer yet, holds
 * nobody back; all down is an error naming each.
 */
describe('failover probe', () => {
  let dir: string
  let full: Awaited<ReturnType<typeof startServe>>
  let empty: Awaited<ReturnType<typeof startServe>>
  let dead: string
  const signal = new AbortController().signal

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-failover-probe-'))
    mkdirSync(join(dir, 'src'))
    mkdirSync(join(dir, 'empty'))
    writeTree(join(dir, 'src'), { 'a.m3u': 'a\n' })
    await runJson(['build', '--source', join(dir, 'src'), '--store', join(dir, 'store'), '--quiet'])
    full = await startServe(join(dir, 'store'))
    empty = await startServe(join(dir, 'empty'))
    const s = createServer()
    await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok))
    dead = `http://127.0.0.1:${(s.address() as AddressInfo).port}/`
    await new Promise<void>((ok) => s.close(() => ok()))
  })
  /** Two stores with the same snapshot, each behind its own `snapshot serve`: a relay and its origin. */
  async function relayAndOrigin(prefix: string) {
    const relayStore = join(dir, `${prefix}relay-store`)
    const originStore = join(dir, `${prefix}origin-store`)
    cpSync(join(dir, 'store'), relayStore, { recursive: true })
    cpSync(join(dir, 'store'), originStore, { recursive: true })
    return { relayStore, originStore, relay: await startServe(relayStore), origin: await startServe(originStore) }
  }
  after(async () => {
    await full?.stop()
    await empty?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('a mirror that is up answers; one that is down does not make the check fail', async () => {
    const probe = openProbes([full.url, dead], { timeoutMs: 5000 })
    try {
      const r = await probe.check(null, signal)
      assert.equal(r.kind, 'fresh')
      const again = await probe.check(r.kind === 'fresh' ? r.version.etag : null, signal)
      assert.deepEqual(again, { kind: 'unchanged', held: false })
    } finally {
      probe.close()
    }
  })

  test('a relay that dies: the next mirror, asked with the relay\'s validator for the same bytes, is asked again with its own (a 304, not a pull), and its new pointer comes through', async () => {
    const { relay, origin, originStore } = await relayAndOrigin('')
    const logged: string[] = []
    const probe = openProbes([relay.url, origin.url], { timeoutMs: 5000 }, (l) => logged.push(l))
    try {
      const first = await probe.check(null, signal)
      assert.equal(first.kind, 'fresh')
      const handled = first.kind === 'fresh' ? first.version.etag : null
      assert.deepEqual(await probe.check(handled, signal), { kind: 'unchanged', held: false })
      await relay.stop()
      assert.deepEqual(await probe.check(handled, signal), { kind: 'unchanged', held: false }) // the same bytes at the origin
      assert.equal(logged.length, 1)
      assert.match(logged[0]!, /^http:\/\/127\.0\.0\.1:\d+\/latest\.json does not answer \(.*ECONNREFUSED.*\): watching the other mirrors$/)
      assert.deepEqual(await probe.check(handled, signal), { kind: 'unchanged', held: false })
      // the master publishes: the origin's new pointer is fresh, with other bytes
      writeTree(join(dir, 'src'), { 'b.m3u': 'b\n' })
      await runJson(['build', '--source', join(dir, 'src'), '--store', originStore, '--quiet'])
      const next = await probe.check(handled, signal)
      assert.equal(next.kind, 'fresh')
      assert.notEqual(next.kind === 'fresh' ? next.version.digest : '', first.kind === 'fresh' ? first.version.digest : '')
      assert.equal(logged.length, 1) // still the origin: nothing more to say
    } finally {
      probe.close()
      await relay.stop()
      await origin.stop()
    }
  })

  test('a mirror that is down or has no pointer yet is passed over; all down is an error naming each', async () => {
    const probe = openProbes([dead, empty.url, full.url], { timeoutMs: 5000 })
    const none = openProbes([dead, dead.replace(/\/$/, '/x/')], { timeoutMs: 5000 })
    const nothing = openProbes([empty.url, dead], { timeoutMs: 5000 })
    try {
      assert.equal((await probe.check(null, signal)).kind, 'fresh')
      const down = await none.check(null, signal)
      assert.equal(down.kind, 'error')
      assert.match(down.kind === 'error' ? down.message : '', /ECONNREFUSED.*; .*ECONNREFUSED/)
      assert.deepEqual(await nothing.check(null, signal), { kind: 'absent' })
    } finally {
      probe.close()
      none.close()
      nothing.close()
    }
  })

  test('the origin\'s publication ends a check held at a relay that is behind; the relay catching up, or staying behind, is not news; a version the watch did not handle is offered again', async () => {
    const { relay, origin, originStore, relayStore } = await relayAndOrigin('behind-')
    // Held for 6 s: the build below, a command of its own, publishes within it on a loaded machine
    // too (with 2 s it once did not, with the whole suite running).
    const probe = openProbes([relay.url, origin.url], { timeoutMs: 10_000, waitSeconds: 6 })
    try {
      const first = await probe.check(null, signal)
      assert.equal(first.kind, 'fresh')
      const handled = first.kind === 'fresh' ? first.version : null
      // Held at both; the master publishes meanwhile (the relay's mirror has not copied it).
      const held = probe.check(handled!.etag, signal)
      await new Promise((r) => setTimeout(r, 300))
      writeTree(join(dir, 'src'), { 'c.m3u': 'c\n' })
      await runJson(['build', '--source', join(dir, 'src'), '--store', originStore, '--quiet'])
      const news = await held
      assert.equal(news.kind, 'fresh', 'the origin\'s new pointer ends the check, whatever the relay says')
      const pulled = news.kind === 'fresh' ? news.version : null
      assert.notEqual(pulled!.digest, handled!.digest)
      // The relay stays on the old pointer: a 304 after the hold, not the old bytes as news.
      assert.deepEqual(await probe.check(pulled!.etag, signal), { kind: 'unchanged', held: true })
      // The relay catches up with bytes the replica already has: not news either.
      cpSync(originStore, relayStore, { recursive: true, force: true })
      assert.deepEqual(await probe.check(pulled!.etag, signal), { kind: 'unchanged', held: true })
      // A watch whose pull failed still names the old version: the new one is offered again at once.
      const retry = await probe.check(handled!.etag, signal)
      assert.equal(retry.kind, 'fresh')
      assert.equal(retry.kind === 'fresh' ? retry.version.digest : '', pulled!.digest)
    } finally {
      probe.close()
      await relay.stop()
      await origin.stop()
    }
  })
})
