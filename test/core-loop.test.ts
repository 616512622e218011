import assert from 'node:assert/strict'
import { chmodSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import { runCli, runJson } from './helpers/cli.js'
import { masterFixture } from './helpers/master-fixture.js'
import { awkwardTree, treeDiff, writeTree } from './helpers/tree.js'

/**
 * The core loop through the real CLI and a real HTTP server on 127.0.0.1: build, serve, pull
 * --swap, again and again, with the replica's tree compared to the master's byte for byte.
 */
describe('core loop: build, serve, pull --swap', () => {
  const { dir, source, store, keys, server } = masterFixture('snapshot-core-', { serve: true })

  before(async () => {
    awkwardTree(source)
  })

  const build = (...extra: string[]) => runJson<{ id: number; kind: string; created: boolean; changed: number; deleted: number }>(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), ...extra])
  const pullArgs = (target: string, ...extra: string[]) => ['pull', '--from', server.url, '--target', target, '--pubkey', join(keys, 'snapshot.pub'), ...extra]
  const pull = (target: string, ...extra: string[]) => runJson<{ action: string; id: number; plan: { steps: { id: number; use: string }[] } | null }>(pullArgs(target, '--swap', ...extra))
  const assertSame = (target: string) => assert.deepEqual(treeDiff(source, target), [])

  test('a full build, then a full pull, gives the same tree', async () => {
    const b = await build()
    assert.equal(b.kind, 'full')
    assert.equal(b.id, 1)
    const replica = join(dir, 'replica-a')
    const p = await pull(replica)
    assert.equal(p.action, 'swapped')
    assert.equal(p.id, 1)
    assertSame(replica)
    assert.ok(readlinkSync(replica).includes('.replica-a.snapshot'))
  })

  test('an unchanged tree makes no new snapshot', async () => {
    const r = await runCli(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key')])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /unchanged/)
    const b = await build()
    assert.equal(b.created, false)
    assert.equal(b.id, 1)
  })

  test('deltas carry edits, deletions, additions, renames and type changes', async () => {
    const replica = join(dir, 'replica-a')
    // 1: edits, deletions, additions, a rename, a mode change
    writeFileSync(join(source, 'plain.m3u'), '#EXTM3U\nchanged\n')
    unlinkSync(join(source, 'tab\there.m3u'))
    rmSync(join(source, 'it\'s'), { recursive: true })
    writeTree(source, { 'added/one.m3u': 'one\n', 'added/two.m3u': 'two\n', 'added/empty': { dir: true } })
    renameSync(join(source, 'café-nfc.m3u'), join(source, 'renamed-café.m3u'))
    chmodSync(join(source, 'exec.sh'), 0o700)
    let b = await build()
    assert.equal(b.kind, 'delta')
    let p = await pull(replica)
    // The tree being recycled was empty: it replays the cached full, and downloads only the delta.
    assert.deepEqual(p.plan?.steps.at(-1), { id: b.id, use: 'delta' })
    assertSame(replica)

    // 2: a file becomes a directory, a directory becomes a file, a link changes target
    unlinkSync(join(source, 'plain.m3u'))
    writeTree(source, { 'plain.m3u/inside.m3u': 'now a directory\n' })
    rmSync(join(source, 'added'), { recursive: true })
    writeFileSync(join(source, 'added'), 'now a file\n')
    unlinkSync(join(source, 'links/to-dir'))
    writeTree(source, { 'links/to-dir': { link: '../empty-dir' } })
    b = await build()
    p = await pull(replica)
    assert.equal(p.id, b.id)
    assertSame(replica)

    // 3: same size, mtime set back: only ctime betrays the edit
    const victim = join(source, 'with space/and "quotes".m3u')
    const st = statSync(victim)
    writeFileSync(victim, 'QUOTED\n')
    utimesSync(victim, st.atime, st.mtime)
    b = await build()
    assert.equal(b.changed, 1)
    p = await pull(replica)
    assertSame(replica)

    // 4: and back: directory to file, file to directory
    rmSync(join(source, 'plain.m3u'), { recursive: true })
    writeFileSync(join(source, 'plain.m3u'), 'a file again\n')
    unlinkSync(join(source, 'added'))
    writeTree(source, { 'added/three.m3u': 'three\n' })
    await build()
    await pull(replica)
    assertSame(replica)
  })

  test('a replica several snapshots behind catches up through the chain', async () => {
    const fresh = join(dir, 'replica-b')
    // replica-b was never pulled: it takes the full and the deltas, or whatever is cheaper
    const p = await pull(fresh)
    assert.equal(p.action, 'swapped')
    assertSame(fresh)
    const again = await pull(fresh)
    assert.equal(again.action, 'up-to-date')
  })

  test('a staged snapshot goes live only with swap', async () => {
    const replica = join(dir, 'replica-a')
    writeFileSync(join(source, 'staged.m3u'), 'staged\n')
    const b = await build()
    const staged = await runJson<{ action: string }>(pullArgs(replica))
    assert.equal(staged.action, 'staged')
    assert.notEqual(treeDiff(source, replica).length, 0)
    const s = await runJson<{ id: number }>(['swap', '--target', replica])
    assert.equal(s.id, b.id)
    assertSame(replica)
  })

  test('a corrupted object is refused and the live tree stays intact', async () => {
    const replica = join(dir, 'replica-a')
    const before = treeDiff(source, replica)
    assert.deepEqual(before, [])
    writeFileSync(join(source, 'plain.m3u'), 'will never arrive\n')
    const b = await build()
    const objects = join(store, 'objects')
    const archive = readdirSync(objects)
      .filter((n) => n.endsWith('.tar.zst'))
      .map((n) => ({ n, t: statSync(join(objects, n)).mtimeMs }))
      .sort((x, y) => y.t - x.t)[0]!.n
    const path = join(objects, archive)
    const good = readFileSync(path)
    const bad = Buffer.from(good)
    bad.writeUInt8(bad.readUInt8(bad.length >> 1) ^ 0xff, bad.length >> 1)
    writeFileSync(path, bad)
    try {
      const r = await runCli(pullArgs(replica, '--swap', '--retries', '0'))
      assert.equal(r.code, 3, r.stderr)
      assert.match(r.stderr, /sha256/)
      assert.equal(readFileSync(join(replica, 'plain.m3u'), 'utf8'), 'a file again\n')
      writeFileSync(path, good.subarray(0, good.length - 10))
      const t = await runCli(pullArgs(replica, '--swap', '--retries', '0'))
      assert.notEqual(t.code, 0)
      assert.equal(readFileSync(join(replica, 'plain.m3u'), 'utf8'), 'a file again\n')
    } finally {
      writeFileSync(path, good)
    }
    const p = await pull(replica)
    assert.equal(p.id, b.id)
    assertSame(replica)
  })

  test('a pointer signed by another key, or unsigned, is refused', async () => {
    const replica = join(dir, 'replica-a')
    const other = join(dir, 'other-keys')
    await runJson(['keygen', '--out', other])
    const r = await runCli(['pull', '--from', server.url, '--target', replica, '--pubkey', join(other, 'snapshot.pub'), '--swap'])
    assert.equal(r.code, 3, r.stderr)
    assert.match(r.stderr, /ERR_SIGNATURE/)
    const unsignedStore = join(dir, 'unsigned-store')
    await runJson(['build', '--source', source, '--store', unsignedStore])
    const u = await runCli(['pull', '--from', unsignedStore, '--target', join(dir, 'replica-u'), '--pubkey', join(keys, 'snapshot.pub'), '--swap'])
    assert.equal(u.code, 3, u.stderr)
    assert.match(u.stderr, /unsigned/)
    assertSame(replica)
  })

  test('pull from a local store directory works too', async () => {
    const replica = join(dir, 'replica-local')
    const p = await runJson<{ action: string }>(['pull', '--from', store, '--target', replica, '--pubkey', join(keys, 'snapshot.pub'), '--swap'])
    assert.equal(p.action, 'swapped')
    assertSame(replica)
  })
})
