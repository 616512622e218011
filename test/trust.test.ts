import assert from 'node:assert/strict'
import { cpSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { runCli, runJson, startServe } from './helpers/cli.js'
import { masterFixture } from './helpers/master-fixture.js'
import { treeDiff, writeTree } from './helpers/tree.js'

/**
 * What a mirror or CDN between master and replica cannot do (TUF's list): serve an older validly
 * signed snapshot, freeze on one, or get past a key rotation done right.
 */
describe('trust: rollback attacks, frozen mirrors, key rotation', () => {
  const { dir, source, store, keys } = masterFixture('snapshot-trust-')

  before(async () => {
    writeTree(source, { 'a.m3u': 'a\n', 'b/c.m3u': 'c\n', 'b/d.m3u': 'd\n', 'e.m3u': 'e\n', 'f.m3u': 'f\n' })
  })

  const build = (key = join(keys, 'snapshot.key')) => runJson<{ id: number }>(['build', '--source', source, '--store', store, '--key', key])

  test('a validly signed but older store is refused (exit 6) and nothing live changes', async () => {
    await build()
    const old = join(dir, 'old-store')
    cpSync(store, old, { recursive: true })
    writeFileSync(join(source, 'a.m3u'), 'newer\n')
    await build()
    const replica = join(dir, 'r-rollback')
    const pub = join(keys, 'snapshot.pub')
    await runJson(['pull', '--from', store, '--target', replica, '--pubkey', pub, '--swap'])
    const server = await startServe(old)
    try {
      const r = await runCli(['pull', '--from', server.url, '--target', replica, '--pubkey', pub, '--swap'])
      assert.equal(r.code, 6, r.stderr)
      assert.match(r.stderr, /refusing to go back/)
      assert.equal(readFileSync(join(replica, 'a.m3u'), 'utf8'), 'newer\n')
    } finally {
      await server.stop()
    }
  })

  test('a frozen mirror is reported by pull and status with exit 13', async () => {
    const replica = join(dir, 'r-fresh')
    const pub = join(keys, 'snapshot.pub')
    await runJson(['pull', '--from', store, '--target', replica, '--pubkey', pub, '--swap'])
    await sleep(2200)
    const r = await runCli(['pull', '--from', store, '--target', replica, '--pubkey', pub, '--swap', '--max-age', '1'])
    assert.equal(r.code, 13, r.stderr)
    assert.match(r.stderr, /frozen/)
    assert.match(r.stdout, /up to date/)
    const s = await runCli(['status', '--target', replica, '--from', store, '--pubkey', pub, '--max-age', '1'])
    assert.equal(s.code, 13, s.stderr)
    const fine = await runCli(['status', '--target', replica, '--from', store, '--pubkey', pub])
    assert.equal(fine.code, 0, fine.stderr)
  })

  test('key rotation: replicas trusting old and new keys follow the master across the change', async () => {
    const newKeys = join(dir, 'new-keys')
    await runJson(['keygen', '--out', newKeys])
    const both = ['--pubkey', join(keys, 'snapshot.pub'), '--pubkey', join(newKeys, 'snapshot.pub')]
    const replica = join(dir, 'r-rotation')
    const oldOnly = join(dir, 'r-old-key-only')
    await runJson(['pull', '--from', store, '--target', replica, ...both, '--swap'])
    await runJson(['pull', '--from', store, '--target', oldOnly, '--pubkey', join(keys, 'snapshot.pub'), '--swap'])
    writeFileSync(join(source, 'e.m3u'), 'signed by the new key\n')
    await build(join(newKeys, 'snapshot.key'))
    await runJson(['pull', '--from', store, '--target', replica, ...both, '--swap'])
    assert.deepEqual(treeDiff(source, replica), [])
    const refused = await runCli(['pull', '--from', store, '--target', oldOnly, '--pubkey', join(keys, 'snapshot.pub'), '--swap'])
    assert.equal(refused.code, 3, refused.stderr)
    assert.equal(readFileSync(join(oldOnly, 'e.m3u'), 'utf8'), 'e\n')
  })
})
