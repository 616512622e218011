import assert from 'node:assert/strict'
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import { runCli, runJson } from './helpers/cli.js'
import { masterFixture } from './helpers/master-fixture.js'
import { copyTree, treeDiff, writeTree } from './helpers/tree.js'

/**
 * What an operator does with a replica, through the real CLI: roll back (instant and rebuilt),
 * stay pinned, unpin, see the status, verify the live tree, veto a swap with a health check, and
 * be saved by the mass-deletion guard.
 */
describe('replica operations', () => {
  const { dir, source, store, keys, server } = masterFixture('snapshot-ops-', { serve: true })
  const copies: string[] = [] // the master's tree at each snapshot id (index = id)

  before(async () => {
    const files: Record<string, string> = {}
    for (let i = 0; i < 40; i++) files[`d${i % 4}/p${i}.m3u`] = `#EXTM3U\n${i}\n`
    writeTree(source, files)
  })

  const build = async (): Promise<number> => {
    const b = await runJson<{ id: number }>(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key')])
    const copy = join(dir, `master-at-${b.id}`)
    copyTree(source, copy)
    copies[b.id] = copy
    return b.id
  }
  const common = (target: string) => ['--target', target, '--pubkey', join(keys, 'snapshot.pub')]
  const pull = (target: string, ...extra: string[]) => runCli(['pull', '--from', server.url, ...common(target), '--swap', ...extra])
  const pullOk = async (target: string, ...extra: string[]) => {
    const r = await pull(target, '--json', ...extra)
    assert.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout) as { action: string; id: number }
  }

  test('rollback is instant to the previous snapshot, pins, and unpin resumes pulls', async () => {
    const replica = join(dir, 'r1')
    const first = await build()
    await pullOk(replica)
    writeFileSync(join(source, 'd0/p0.m3u'), 'a bad hour\n')
    const second = await build()
    await pullOk(replica)
    assert.deepEqual(treeDiff(copies[second]!, replica), [])

    const rb = await runJson<{ from: number; to: number; instant: boolean }>(['rollback', ...common(replica)])
    assert.deepEqual([rb.from, rb.to, rb.instant], [second, first, true])
    assert.deepEqual(treeDiff(copies[first]!, replica), [])
    // the tree it left is still there, as evidence
    const trees = join(dir, '.r1.snapshot', 'trees')
    assert.ok(readdirSync(trees).some((t) => readFileSync(join(trees, t, 'd0/p0.m3u'), 'utf8') === 'a bad hour\n'))

    const pinned = await pullOk(replica)
    assert.equal(pinned.action, 'pinned')
    assert.deepEqual(treeDiff(copies[first]!, replica), [])
    const status = await runJson<{ live: { id: number }; pinned: { id: number } | null }>(['status', ...common(replica), '--from', server.url])
    assert.equal(status.live.id, first)
    assert.equal(status.pinned?.id, first)

    await runJson(['unpin', ...common(replica)])
    const resumed = await pullOk(replica)
    assert.equal(resumed.id, second)
    assert.deepEqual(treeDiff(source, replica), [])
  })

  test('rollback to a snapshot no tree keeps is rebuilt from the store', async () => {
    const replica = join(dir, 'r1')
    writeFileSync(join(source, 'd1/p1.m3u'), 'third\n')
    await build()
    await pullOk(replica)
    const r = await runCli(['rollback', ...common(replica), '--to', '1'])
    assert.equal(r.code, 2, 'without --from it cannot rebuild')
    const rb = await runJson<{ to: number; instant: boolean }>(['rollback', ...common(replica), '--to', '1', '--from', server.url])
    assert.deepEqual([rb.to, rb.instant], [1, false])
    assert.deepEqual(treeDiff(copies[1]!, replica), [])
    await runJson(['unpin', ...common(replica)])
    await pullOk(replica)
    assert.deepEqual(treeDiff(source, replica), [])
  })

  test('verify --target names a file changed behind our back', async () => {
    const replica = join(dir, 'r1')
    const ok = await runCli(['verify', ...common(replica), '--from', server.url])
    assert.equal(ok.code, 0, ok.stderr)
    writeFileSync(join(replica, 'd2/p2.m3u'), 'tampered\n')
    unlinkSync(join(replica, 'd3/p3.m3u'))
    // Same size, other bytes, in a file a delta wrote: only the hash replayed from the archives sees it.
    assert.equal(readFileSync(join(replica, 'd1/p1.m3u'), 'utf8'), 'third\n')
    writeFileSync(join(replica, 'd1/p1.m3u'), 'THIRD\n')
    chmodSync(join(replica, 'd0/p0.m3u'), 0o600)
    const bad = await runCli(['verify', ...common(replica), '--from', server.url, '--json'])
    assert.equal(bad.code, 3, bad.stderr)
    const report = JSON.parse(bad.stdout) as { problems: { path: string; problem: string }[] }
    // d3 lost an entry: its mtime moved too.
    assert.deepEqual(report.problems.map((p) => p.path).sort(), ['d0/p0.m3u', 'd1/p1.m3u', 'd2/p2.m3u', 'd3', 'd3/p3.m3u'])
    assert.match(report.problems.find((p) => p.path === 'd3')!.problem, /^mtime \d+\.\d{9}, the snapshot says \d+\.\d{9}$/)
    assert.deepEqual(report.problems.find((p) => p.path === 'd1/p1.m3u')?.problem, 'content differs from the snapshot')
    assert.match(report.problems.find((p) => p.path === 'd0/p0.m3u')!.problem, /^mode 600, the manifest says 644$/)
    await pullOk(join(dir, 'r-fresh')) // a clean one for later tests
  })

  test('a pre-swap health check can veto; a post-swap hook runs after the swap', async () => {
    const replica = join(dir, 'r-fresh')
    writeFileSync(join(source, 'hooked.m3u'), 'hooked\n')
    const id = await build()
    const veto = await pull(replica, '--pre-swap', 'test -f "$SNAPSHOT_TREE/no-such-file"')
    assert.equal(veto.code, 15, veto.stderr)
    assert.ok(!existsSync(join(replica, 'hooked.m3u')), 'nothing live changed')
    const marker = join(dir, 'post-swap.txt')
    const okPull = await pullOk(replica, '--pre-swap', 'test -f "$SNAPSHOT_TREE/hooked.m3u"', '--post-swap', `echo "$SNAPSHOT_ID" > ${JSON.stringify(marker)}`)
    assert.equal(okPull.id, id)
    assert.equal(readFileSync(marker, 'utf8').trim(), String(id))
    assert.deepEqual(treeDiff(source, replica), [])
  })

  test('the mass-deletion guard refuses to swap in a mostly empty tree without --force', async () => {
    const replica = join(dir, 'r-fresh')
    for (let i = 0; i < 30; i++) rmSync(join(source, `d${i % 4}/p${i}.m3u`), { force: true })
    await build()
    const r = await pull(replica)
    assert.equal(r.code, 14, r.stderr)
    assert.match(r.stderr, /--force/)
    assert.ok(existsSync(join(replica, 'd0/p0.m3u')), 'nothing live changed')
    await pullOk(replica, '--force')
    assert.deepEqual(treeDiff(source, replica), [])
  })
})
