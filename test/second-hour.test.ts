import assert from 'node:assert/strict'
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { after, before, test, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { generateCorpus, mutateCorpus } from '../scripts/corpus.js'
import { runCli, runJson } from './helpers/cli.js'
import { awkwardTree, copyTree, treeDiff } from './helpers/tree.js'

/**
 * A new replica's second hour (issue 15): its first pull fills the first tree from the full
 * archive and swaps, then fills the second tree after the swap; its second pull applies that one
 * hour onto a tree one hour behind before it swaps, instead of writing the whole tree again.
 * Counted, not timed: the files a pull writes before its swap, and the replica compared with the
 * master (names as bytes, modes, links, mtimes) after every pull.
 */
const FILES = 4000
const HOUR = { modifyFraction: 40 / FILES, deleteFraction: 5 / FILES, addFraction: 5 / FILES } // ~50 changes, as in the issue

interface Pulled {
  action: string
  id: number
  plan: { steps: { id: number; use: 'full' | 'delta' }[]; baseId: number | null } | null
  applied: { filesWritten: number; deleted: number }
  catchUp: { slot: string; id: number; filesWritten: number; error?: string } | null
}
interface State {
  live: { slot: string; id: number } | null
  slots: Record<string, { status: string; id?: number; base?: number | null }>
}

let dir: string
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'snapshot-second-hour-'))
})
after(() => rmSync(dir, { recursive: true, force: true }))

// Files changed in the last two seconds are read again by the next build: wait that out so the
// hour's delta holds exactly the hour's changes.
const settle = () => sleep(2100)

/** A master of FILES playlists plus the awkward cases (odd and non-UTF-8 names, links, modes), with its store. */
async function site(name: string) {
  const root = join(dir, name)
  const source = join(root, 'master')
  const store = join(root, 'store')
  const replica = join(root, 'replica')
  mkdirSync(store, { recursive: true })
  await generateCorpus({ files: FILES, out: source, seed: `second-hour-${name}` })
  awkwardTree(join(source, 'awkward'))
  writeFileSync(Buffer.from(`${source}/awkward/latin1-\xe9.m3u`, 'latin1'), 'a name that is not UTF-8\n')
  await settle()
  const stateDir = join(root, '.replica.snapshot')
  return {
    source,
    replica,
    stateDir,
    tree: (slot: string) => join(stateDir, 'trees', slot),
    state: () => JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as State,
    build: () => runJson<{ id: number }>(['build', '--source', source, '--store', store, '--quiet']),
    pullArgs: (trees: number) => ['pull', '--from', store, '--target', replica, '--swap', '--quiet', '--trees', String(trees)],
    pull: (trees: number) => runJson<Pulled>(['pull', '--from', store, '--target', replica, '--swap', '--quiet', '--trees', String(trees)]),
    hour: async (seed: string) => {
      const h = await mutateCorpus({ out: source, seed, ...HOUR })
      await settle()
      return h
    },
  }
}

/** Regular files under `root` that share their inode with another name (a hard link); names as bytes. */
function sharedInodes(root: string): string[] {
  const shared: string[] = []
  const walk = (dirPath: Buffer): void => {
    for (const name of readdirSync(dirPath, { encoding: 'buffer' })) {
      const path = Buffer.concat([dirPath, Buffer.from('/'), name])
      const st = lstatSync(path)
      if (st.isDirectory()) walk(path)
      else if (st.isFile() && st.nlink !== 1) shared.push(path.toString('latin1'))
    }
  }
  walk(Buffer.from(root))
  return shared
}

for (const trees of [2, 3]) {
  test(`--trees ${trees}: a new replica fills its second tree after the first swap, and its second pull writes only the hour before it swaps`, { timeout: 240_000 }, async () => {
    const s = await site(`trees-${trees}`)
    const first = await s.build()
    const atFirst = join(dir, `trees-${trees}-at-first`)
    copyTree(s.source, atFirst) // the master as snapshot 1 had it, for the rollback at the end

    // The first pull: the full archive into the first tree, the swap, then the second tree filled.
    const p1 = await s.pull(trees)
    assert.equal(p1.action, 'swapped')
    assert.deepEqual(p1.plan?.steps, [{ id: first.id, use: 'full' }])
    assert.ok(p1.applied.filesWritten >= FILES, `the first pull writes the whole tree (${p1.applied.filesWritten})`)
    const live1 = s.state().live!
    assert.ok(p1.catchUp && !p1.catchUp.error, `the second tree is filled after the swap: ${JSON.stringify(p1.catchUp)}`)
    assert.notEqual(p1.catchUp.slot, live1.slot, 'never the live tree')
    assert.equal(p1.catchUp.id, first.id)
    assert.equal(p1.catchUp.filesWritten, p1.applied.filesWritten)
    assert.deepEqual(treeDiff(s.source, s.replica), [])
    assert.deepEqual(treeDiff(s.source, s.tree(p1.catchUp.slot)), [], 'the filled tree equals the master')
    assert.deepEqual(sharedInodes(s.tree(p1.catchUp.slot)), [], 'the filled tree is a copy of its own: no inode shared with the live tree')
    assert.deepEqual(treeDiff(s.source, s.replica), [], 'filling the second tree left the live tree as it was')

    // The second hour: one hour applied onto the filled tree before the swap.
    const h = await s.hour(`second-hour-${trees}-1`)
    const second = await s.build()
    const p2 = await s.pull(trees)
    assert.equal(p2.action, 'swapped')
    assert.deepEqual(p2.plan?.steps, [{ id: second.id, use: 'delta' }], 'one delta, no full archive')
    assert.equal(p2.plan?.baseId, first.id)
    const changed = h.modified + h.added
    assert.ok(p2.applied.filesWritten <= changed + 10, `wrote ${p2.applied.filesWritten} files before the swap for ${changed} changed`)
    assert.ok(p2.applied.filesWritten < FILES / 20, `a fraction of the ${FILES}-file tree, not the tree (${p2.applied.filesWritten})`)
    assert.equal(p2.applied.deleted, h.deleted)
    assert.deepEqual(treeDiff(s.source, s.replica), [])
    const st = s.state()
    assert.equal(st.live?.slot, p1.catchUp.slot, 'the filled tree went live')
    assert.deepEqual([st.slots[live1.slot]?.status, st.slots[live1.slot]?.id], ['ready', first.id], 'the previous live tree is kept for rollback')
    if (trees === 2) {
      assert.equal(p2.catchUp, null, 'with two trees the other one is the rollback tree: never caught up')
    } else {
      assert.ok(p2.catchUp && !p2.catchUp.error && p2.catchUp.id === second.id, `the spare caught up: ${JSON.stringify(p2.catchUp)}`)
      assert.ok(![live1.slot, st.live?.slot].includes(p2.catchUp.slot), 'neither the live nor the rollback tree')
      assert.deepEqual(treeDiff(s.source, s.tree(p2.catchUp.slot)), [])
    }

    // The previous snapshot is still there for an instant rollback.
    const rb = await runJson<{ from: number; to: number; instant: boolean }>(['rollback', '--target', s.replica, '--trees', String(trees)])
    assert.deepEqual([rb.from, rb.to, rb.instant], [second.id, first.id, true])
    assert.deepEqual(treeDiff(atFirst, s.replica), [], 'the rollback tree is snapshot 1 exactly')

    // Unpinned, the next hour brings the replica back to the master, exactly.
    await s.hour(`second-hour-${trees}-2`)
    await s.build()
    const p3 = await runJson<Pulled>([...s.pullArgs(trees), '--unpin'])
    assert.equal(p3.action, 'swapped')
    assert.ok(p3.applied.filesWritten < FILES / 10, `wrote ${p3.applied.filesWritten}`)
    assert.deepEqual(treeDiff(s.source, s.replica), [])
  })
}

test('--trees 2: a fill that fails does not fail the pull; the next pull rebuilds that tree and stays exact', { timeout: 240_000 }, async () => {
  const s = await site('fill-fails')
  const first = await s.build()
  // The fill must move the stale tree found where it goes into the trash first; a file where the
  // trash directory should be makes that fail (the pull removes the trash, file or not, at its end).
  mkdirSync(join(s.tree('b'), 'stale'), { recursive: true })
  writeFileSync(join(s.stateDir, 'trash'), 'in the way\n')
  const p1 = await s.pull(2)
  assert.equal(p1.action, 'swapped')
  assert.equal(s.state().live?.slot, 'a')
  assert.ok(p1.catchUp?.error, `the fill failed and said so: ${JSON.stringify(p1.catchUp)}`)
  assert.equal(p1.catchUp.slot, 'b')
  assert.deepEqual(treeDiff(s.source, s.replica), [], 'the swap stands')
  assert.equal(s.state().slots.b?.status, 'dirty')

  await s.hour('fill-fails-1')
  const second = await s.build()
  const p2 = await s.pull(2)
  assert.deepEqual(p2.plan?.steps, [{ id: first.id, use: 'full' }, { id: second.id, use: 'delta' }], 'the unfilled tree is rebuilt before the swap, as before this change')
  assert.deepEqual(treeDiff(s.source, s.replica), [])
  const rb = await runJson<{ to: number; instant: boolean }>(['rollback', '--target', s.replica, '--trees', '2'])
  assert.deepEqual([rb.to, rb.instant], [first.id, true])
})

test('--trees 2: a crash while filling the second tree leaves the swap standing; the next pulls are exact', { timeout: 240_000 }, async () => {
  const s = await site('fill-crashes')
  const first = await s.build()
  // The first apply is the first tree's, before the swap; the second is the fill's, after it.
  const crashed = await runCli(s.pullArgs(2), { env: { SNAPSHOT_CRASH_AT: 'pull:apply:before#2' } })
  assert.notEqual(crashed.code, 0, 'killed while filling')
  const st = s.state()
  assert.deepEqual([st.live?.slot, st.live?.id], ['a', first.id], 'the swap happened before the fill')
  assert.deepEqual(st.slots.b, { status: 'dirty', base: null, target: first.id })
  assert.deepEqual(treeDiff(s.source, s.replica), [])

  // The same snapshot again: up to date; the dirty tree is not taken for one.
  const again = await s.pull(2)
  assert.equal(again.action, 'up-to-date')
  await s.hour('fill-crashes-1')
  const second = await s.build()
  const p2 = await s.pull(2)
  assert.equal(p2.action, 'swapped')
  assert.equal(p2.id, second.id)
  assert.deepEqual(treeDiff(s.source, s.replica), [])
  const rb = await runJson<{ to: number; instant: boolean }>(['rollback', '--target', s.replica, '--trees', '2'])
  assert.deepEqual([rb.to, rb.instant], [first.id, true])
})

test('--trees 2: no room for the second tree: the fill gives up, removes what it wrote, and the pull stands', { timeout: 240_000 }, async (t) => {
  const root = join(dir, 'no-room')
  const source = join(root, 'master')
  const store = join(root, 'store')
  const replica = join(root, 'replica')
  mkdirSync(store, { recursive: true })
  mkdirSync(join(source, 'lists'), { recursive: true })
  for (let i = 0; i < 50; i++) writeFileSync(join(source, 'lists', `${i}.m3u`), `#EXTM3U\n#EXTINF:${i},a\n`)
  writeFileSync(join(source, 'blob.bin'), randomBytes(1 << 20)) // does not compress: the tree and the archive are ~1 MiB each
  await settle()
  // Room for the downloaded archive and one tree, not for a second tree.
  const fs = mountSmall(t, join(root, 'replica-fs'), '2600k')
  if (!fs) return
  const stateDir = join(fs, 'state')
  const pullArgs = ['pull', '--from', store, '--target', replica, '--state', stateDir, '--swap', '--quiet', '--trees', '2']
  await runJson(['build', '--source', source, '--store', store, '--quiet'])
  const p1 = await runJson<Pulled>(pullArgs)
  assert.equal(p1.action, 'swapped')
  assert.match(p1.catchUp?.error ?? '', /disk is full/, JSON.stringify(p1.catchUp))
  const state = JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as State
  assert.deepEqual(state.slots.b, { status: 'empty' })
  assert.ok(!existsSync(join(stateDir, 'trees', 'b')), 'the half-filled tree is gone')
  assert.deepEqual(treeDiff(source, replica), [], 'the live tree is intact')

  remount(fs, '16m')
  writeFileSync(join(source, 'lists', 'new.m3u'), '#EXTM3U\n')
  await settle()
  await runJson(['build', '--source', source, '--store', store, '--quiet'])
  const p2 = await runJson<Pulled>(pullArgs)
  assert.equal(p2.action, 'swapped')
  assert.deepEqual(treeDiff(source, replica), [])
})

/** A tmpfs of `size` at `path`, unmounted after the test; null (the test skipped, saying why) where mounts are not allowed. */
function mountSmall(t: TestContext, path: string, size: string): string | null {
  mkdirSync(path, { recursive: true })
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', path], { encoding: 'utf8' })
  if (r.status !== 0) {
    t.skip(`cannot mount a small tmpfs here (${(r.stderr || r.error?.message || '').trim()}): needs root or CAP_SYS_ADMIN, as in CI`)
    return null
  }
  t.after(() => {
    if (spawnSync('umount', [path]).status !== 0) spawnSync('umount', ['-l', path])
  })
  return path
}

function remount(path: string, size: string): void {
  const r = spawnSync('mount', ['-o', `remount,size=${size}`, path], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stderr)
}
