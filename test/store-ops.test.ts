import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync, utimesSync, writeFileSync, existsSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import { runCli, runJson } from './helpers/cli.js'
import { masterFixture } from './helpers/master-fixture.js'
import { copyTree, treeDiff, writeTree } from './helpers/tree.js'

/**
 * The store-side operations through the real CLI, on one store that grows as the tests run:
 * list (directory and URL), verify, prune with fresh and old replicas, the build lock, and fleet
 * rollback converging a replica.
 */
interface Listing {
  latest: number
  snapshots: { id: number; kind: string; created: string; size: number; files: number; changes: number | null; rollbackOf: number | null }[]
}
interface Pruned {
  kept: number[]
  held: { id: number; reason: string }[]
  removed: { snapshots: number[]; objects: number; temps: number }
  young: { objects: number; temps: number }
}
interface Verified {
  ok: boolean
  signaturesChecked: boolean
  problems: { path: string; message: string }[]
}
interface Built {
  id: number
  kind: string
  created: boolean
  rollbackOf?: number
  pruned?: Pruned
}

const STABLE_FILES = 20

describe('store operations: list, verify, prune, lock, fleet rollback', () => {
  const { dir, source, store, keys, server } = masterFixture('snapshot-store-ops-', { serve: true })
  let treeOf3: string

  const key = (): string => join(keys, 'snapshot.key')
  const pub = (): string => join(keys, 'snapshot.pub')
  const build = (...extra: string[]) => runJson<Built>(['build', '--source', source, '--store', store, '--key', key(), '--quiet', ...extra])
  const pull = (target: string) => runJson<{ action: string; id: number; plan: { steps: { id: number; use: string }[] } | null }>(['pull', '--from', server.url, '--target', target, '--pubkey', pub(), '--swap', '--quiet'])
  /** The objects a record names, read from its file in the store. */
  const objectsOf = (id: number): string[] => {
    const env = JSON.parse(readFileSync(join(store, 'snapshots', `${id}.json`), 'utf8')) as { signed: string }
    const r = (JSON.parse(env.signed) as { snapshot: Record<string, { archive: { path: string }; manifest: { path: string } } | undefined> }).snapshot
    return [r.delta, r.full].flatMap((p) => (p ? [p.archive.path, p.manifest.path] : []))
  }

  before(async () => {
    treeOf3 = join(dir, 'tree-of-3')
    writeTree(source, { 'a.m3u': 'a1\n', 'b/b.m3u': 'b1\n', 'b/c.m3u': 'c1\n', 'link': { link: 'a.m3u' }, 'empty': { dir: true } })
    // files that never change, so that no step trips the replicas' mass-deletion guard; with
    // bodies that do not compress away, so that the full outweighs the few small deltas after it,
    // as on a real tree (the full policy compares their compressed bytes)
    for (let i = 0; i < STABLE_FILES; i++) writeTree(source, { [`stable/${i}.m3u`]: `stable ${i}\n${createHash('sha256').update(`stable ${i}`).digest('base64')}\n` })
    await build() // 1: full
    await pull(join(dir, 'replica-old')) // this replica stays at 1 until after the prune
    writeFileSync(join(source, 'a.m3u'), 'a2\n')
    writeTree(source, { 'new/one.m3u': 'one\n' })
    await build() // 2: delta
    unlinkSync(join(source, 'b/c.m3u'))
    writeFileSync(join(source, 'b/b.m3u'), 'b3\n')
    await build('--full') // 3: full and delta
    copyTree(source, treeOf3)
    writeFileSync(join(source, 'a.m3u'), 'a4\n')
    rmSync(join(source, 'new'), { recursive: true })
    await build() // 4: delta
  })

  test('list shows every snapshot, from a store directory and over HTTP', async () => {
    const local = await runJson<Listing>(['list', '--store', store, '--pubkey', pub()])
    assert.equal(local.latest, 4)
    assert.deepEqual(local.snapshots.map((s) => [s.id, s.kind]), [[1, 'full'], [2, 'delta'], [3, 'full'], [4, 'delta']])
    // 2: a.m3u, new, new/one.m3u; 3: b/b.m3u, b (its mtime moved) and the deletion of b/c.m3u;
    // 4: a.m3u and two deletions (the root's own mtime travels in the manifest's header)
    assert.deepEqual(local.snapshots.map((s) => s.changes), [null, 3, 3, 3])
    assert.deepEqual(local.snapshots.map((s) => s.files - STABLE_FILES), [3, 4, 3, 2])
    assert.ok(local.snapshots.every((s) => s.size > 0 && !Number.isNaN(Date.parse(s.created))))
    const remote = await runJson<Listing>(['list', '--from', server.url, '--pubkey', pub()])
    assert.deepEqual(remote, local)
    const human = await runCli(['list', '--from', server.url, '--pubkey', pub()])
    assert.equal(human.code, 0, human.stderr)
    assert.equal(human.stdout.trim().split('\n').length, 5) // a header and four snapshots
    assert.match(human.stdout, /^\s+4\s+delta\s.*latest$/m)
    const other = join(dir, 'other-keys')
    await runJson(['keygen', '--out', other, '--quiet'])
    const refused = await runCli(['list', '--store', store, '--pubkey', join(other, 'snapshot.pub')])
    assert.equal(refused.code, 3, refused.stderr)
  })

  test('verify: clean is 0; a corrupted object or a foreign key is 3, with the culprit named', async () => {
    const clean = await runJson<Verified>(['verify', '--store', store, '--pubkey', pub()])
    assert.deepEqual(clean, { ...clean, ok: true, signaturesChecked: true, problems: [] })
    const unkeyed = await runCli(['verify', '--store', store])
    assert.equal(unkeyed.code, 0, unkeyed.stderr)
    assert.match(unkeyed.stdout, /structure only/)

    const victim = objectsOf(2).find((p) => p.endsWith('.tar.zst'))!
    const file = join(store, victim)
    const good = readFileSync(file)
    const bad = Buffer.from(good)
    bad.writeUInt8(bad.readUInt8(bad.length >> 1) ^ 0xff, bad.length >> 1)
    writeFileSync(file, bad)
    try {
      const r = await runCli(['verify', '--store', store, '--pubkey', pub(), '--json'])
      assert.equal(r.code, 3, r.stderr)
      const report = JSON.parse(r.stdout) as Verified
      assert.deepEqual(report.problems.map((p) => p.path), [victim])
      assert.match(report.problems[0]!.message, /sha256.*snapshot 2/)
      assert.match(r.stderr, new RegExp(`ERR_STORE_VERIFY.*${victim}`))
      writeFileSync(file, good.subarray(0, 10))
      const t = await runCli(['verify', '--store', store])
      assert.equal(t.code, 3)
      assert.match(t.stdout, new RegExp(`problem: ${victim}: 10 bytes`))
      unlinkSync(file)
      const m = await runCli(['verify', '--store', store])
      assert.equal(m.code, 3)
      assert.match(m.stdout, new RegExp(`problem: ${victim}: missing`))
    } finally {
      writeFileSync(file, good)
    }

    const other = join(dir, 'other-keys-2')
    await runJson(['keygen', '--out', other, '--quiet'])
    const foreign = await runCli(['verify', '--store', store, '--pubkey', join(other, 'snapshot.pub'), '--json'])
    assert.equal(foreign.code, 3, foreign.stderr)
    const report = JSON.parse(foreign.stdout) as Verified
    assert.deepEqual(report.problems.map((p) => p.path).sort(), ['latest.json', 'snapshots/1.json', 'snapshots/2.json', 'snapshots/3.json', 'snapshots/4.json'])
    assert.ok(report.problems.every((p) => /signature/.test(p.message)))
  })

  test('prune --keep 1: grace holds superseded snapshots, then a fresh and an old replica both reach the latest', async () => {
    const dry = await runJson<Pruned>(['prune', '--store', store, '--keep', '1', '--grace', '0', '--dry-run'])
    assert.deepEqual(dry.removed.snapshots, [1, 2])
    assert.equal(readdirSync(join(store, 'snapshots')).length, 4)

    const held = await runJson<Pruned>(['prune', '--store', store, '--keep', '1']) // default grace: an hour
    assert.deepEqual(held.removed.snapshots, [])
    assert.deepEqual(held.held, [{ id: 1, reason: 'grace' }, { id: 2, reason: 'grace' }])

    const gone = [...objectsOf(1), ...objectsOf(2)].filter((p) => !objectsOf(3).includes(p) && !objectsOf(4).includes(p))
    const r = await runJson<Pruned>(['prune', '--store', store, '--keep', '1', '--grace', '0'])
    assert.deepEqual(r.kept, [3, 4])
    assert.deepEqual(r.removed.snapshots, [1, 2])
    assert.equal(r.removed.objects, gone.length)
    assert.deepEqual(readdirSync(join(store, 'snapshots')).sort(), ['3.json', '4.json'])
    for (const p of gone) assert.ok(!existsSync(join(store, p)), p)
    for (const p of [...objectsOf(3), ...objectsOf(4)]) assert.ok(existsSync(join(store, p)), p)

    const v = await runCli(['verify', '--store', store, '--pubkey', pub()])
    assert.equal(v.code, 0, v.stdout + v.stderr)
    const listing = await runJson<Listing>(['list', '--from', server.url, '--pubkey', pub()])
    assert.deepEqual(listing.snapshots.map((s) => s.id), [3, 4])

    const fresh = join(dir, 'replica-fresh')
    assert.equal((await pull(fresh)).id, 4)
    assert.deepEqual(treeDiff(source, fresh), [])
    const old = join(dir, 'replica-old')
    const p = await pull(old)
    assert.equal(p.id, 4)
    assert.deepEqual(p.plan?.steps, [{ id: 3, use: 'full' }, { id: 4, use: 'delta' }])
    assert.deepEqual(treeDiff(source, old), [])
  })

  test('prune removes unreferenced objects and temp files only once older than the grace period', async () => {
    const hoursAgo = (h: number): Date => new Date(Date.now() - h * 3600_000)
    const oldObject = join(store, 'objects', `${'a'.repeat(64)}.tar.zst`)
    const youngObject = join(store, 'objects', `${'b'.repeat(64)}.tar.zst`)
    const oldTemp = join(store, '.state', '.index-99.bin.0000.tmp')
    const youngTemp = join(store, 'objects', '.incoming.tar.zst.1111.tmp')
    const oldWork = join(store, '.state', 'rollback-1-dead')
    for (const f of [oldObject, youngObject, oldTemp, youngTemp]) writeFileSync(f, 'left by a build that died\n')
    mkdirSync(join(oldWork, 'tree'), { recursive: true })
    for (const f of [oldObject, oldTemp, oldWork]) utimesSync(f, hoursAgo(2), hoursAgo(2))
    // a kept snapshot's object is old too, but named by a kept record
    const keptObject = join(store, objectsOf(4)[0]!)
    utimesSync(keptObject, hoursAgo(5), hoursAgo(5))

    const r = await runJson<Pruned>(['prune', '--store', store, '--keep', '1'])
    assert.equal(r.removed.objects, 1)
    assert.equal(r.removed.temps, 2)
    assert.deepEqual(r.young, { objects: 1, temps: 1 })
    assert.ok(!existsSync(oldObject) && !existsSync(oldTemp) && !existsSync(oldWork))
    assert.ok(existsSync(youngObject) && existsSync(youngTemp) && existsSync(keptObject))
    rmSync(youngObject)
    rmSync(youngTemp)
  })

  test('the store lock: a held lock fails a build with exit 11; two concurrent builds never corrupt the store', async () => {
    const lock = join(store, '.state', 'build.lock')
    writeFileSync(lock, `${process.pid} ${hostname()} ${new Date().toISOString()}\n`) // a live holder: this test
    try {
      writeFileSync(join(source, 'locked.m3u'), 'waits\n')
      const b = await runCli(['build', '--source', source, '--store', store, '--key', key()])
      assert.equal(b.code, 11, b.stderr)
      assert.match(b.stderr, /ERR_LOCKED/)
      const p = await runCli(['prune', '--store', store, '--keep', '1'])
      assert.equal(p.code, 11, p.stderr)
    } finally {
      unlinkSync(lock)
    }

    const args = ['build', '--source', source, '--store', store, '--key', key(), '--json', '--quiet']
    const [x, y] = await Promise.all([runCli(args), runCli(args)])
    for (const r of [x, y]) assert.ok(r.code === 0 || r.code === 11, `exit ${r.code}: ${r.stderr}`)
    const made = [x, y].filter((r) => r.code === 0).map((r) => JSON.parse(r.stdout) as Built)
    assert.equal(made.filter((m) => m.created).length, 1, JSON.stringify(made)) // the other waited its turn and found no change, or was refused
    assert.equal((await runCli(['verify', '--store', store, '--pubkey', pub()])).code, 0)
    const fresh = join(dir, 'replica-fresh')
    assert.equal((await pull(fresh)).id, made.find((m) => m.created)!.id)
    assert.deepEqual(treeDiff(source, fresh), [])
    assert.ok(!existsSync(lock))
  })

  test('fleet rollback publishes the old tree as a new snapshot, and a replica converges to it', async () => {
    const before = await runJson<Listing>(['list', '--store', store])
    const noKey = await runCli(['rollback', '--store', store, '--to', '3'])
    assert.equal(noKey.code, 2, noKey.stderr) // a signed store stays signed
    const pruned = await runCli(['rollback', '--store', store, '--to', '1', '--key', key()])
    assert.equal(pruned.code, 10, pruned.stderr)
    assert.match(pruned.stderr, /snapshot 1 .*pruned/)
    const unknown = await runCli(['rollback', '--store', store, '--to', '999', '--key', key()])
    assert.equal(unknown.code, 10, unknown.stderr)

    const r = await runJson<Built>(['rollback', '--store', store, '--to', '3', '--key', key(), '--quiet'])
    assert.equal(r.created, true)
    assert.equal(r.rollbackOf, 3)
    assert.ok(r.id > before.latest)
    assert.deepEqual(readdirSync(join(store, '.state')).filter((n) => n.startsWith('rollback-')), [])
    const after = await runJson<Listing>(['list', '--from', server.url, '--pubkey', pub()])
    assert.equal(after.latest, r.id)
    assert.equal(after.snapshots.at(-1)!.rollbackOf, 3)

    for (const name of ['replica-old', 'replica-fresh']) {
      const target = join(dir, name)
      const p = await pull(target)
      assert.equal(p.id, r.id)
      assert.deepEqual(p.plan?.steps.at(-1), { id: r.id, use: r.kind === 'full' ? 'full' : 'delta' })
      assert.deepEqual(treeDiff(treeOf3, target), [])
    }

    // The next regular build publishes the source's tree again, and build --keep prunes as it goes.
    writeFileSync(join(source, 'fixed.m3u'), 'fixed\n')
    const next = await build('--keep', '1', '--grace', '0', '--full')
    assert.equal(next.created, true)
    assert.deepEqual(next.pruned?.kept, [next.id])
    assert.ok(next.pruned!.removed.snapshots.includes(r.id))
    const target = join(dir, 'replica-old')
    assert.equal((await pull(target)).id, next.id)
    assert.deepEqual(treeDiff(source, target), [])
    assert.equal((await runCli(['verify', '--store', store, '--pubkey', pub()])).code, 0)
  })
})
