import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { generateCorpus, mutateCorpus } from '../scripts/corpus.js'
import { runJson } from './helpers/cli.js'
import { treeDiff } from './helpers/tree.js'

/**
 * The cost of an hour follows the changes, not the tree (issue "Seed-scale performance", item 4),
 * measured in counts that do not depend on timing: files a delta build reads, and files a delta
 * pull writes, on a 20k-file tree with 0.5% of it changed.
 */
const FILES = 20_000
const CHANGES = { modifyFraction: 0.004, deleteFraction: 0.0005, addFraction: 0.0005 } // 80 + 10 + 10

let dir: string
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'snapshot-flat-'))
})
after(() => rmSync(dir, { recursive: true, force: true }))

// Files changed in the last two seconds are read again by the next build (they could change again
// within the clock's granularity); wait that out so the counts are exact.
const settle = () => sleep(2100)

test('a delta build reads only the changed files; a delta pull writes only the changes', { timeout: 240_000 }, async () => {
  const source = join(dir, 'master')
  const store = join(dir, 'store')
  const replica = join(dir, 'replica')
  const spared = join(dir, 'spared') // keeps three trees: a spare caught up after each swap
  mkdirSync(store)
  await generateCorpus({ files: FILES, out: source, seed: 'flat' })
  await settle()
  const build = () => runJson<{ id: number; filesRead: number; changed: number; deleted: number }>(['build', '--source', source, '--store', store, '--quiet'])
  type Pulled = { id: number; applied: { filesWritten: number; deleted: number }; catchUp: { slot: string; id: number; filesWritten: number; error?: string } | null }
  const pullInto = (target: string, trees: number) => runJson<Pulled>(['pull', '--from', store, '--target', target, '--swap', '--quiet', '--trees', String(trees)])
  const pull = async () => {
    await pullInto(spared, 3)
    return pullInto(replica, 2)
  }

  const first = await build()
  assert.equal(first.filesRead, FILES)
  await pull()
  // Two hours to reach the steady state: the tree being recycled has been filled once.
  for (const hour of [1, 2]) {
    await mutateCorpus({ out: source, seed: `flat-${hour}`, ...CHANGES })
    await settle()
    await build()
    await pull()
  }
  const hour = await mutateCorpus({ out: source, seed: 'flat-3', ...CHANGES })
  await settle()
  const b = await build()
  assert.equal(b.filesRead, hour.modified + hour.added, 'a delta build reads the changed files and nothing else')
  assert.equal(b.deleted, hour.deleted)
  const p = await pullInto(replica, 2)
  // The recycled tree replays the last two hours: at most twice the changes, never the tree.
  assert.ok(p.applied.filesWritten <= 2 * (hour.modified + hour.added) + 20, `wrote ${p.applied.filesWritten} files for ${hour.modified + hour.added} changes`)
  assert.ok(p.applied.filesWritten < FILES / 20)
  assert.deepEqual(treeDiff(source, replica), [])

  // With a spare tree, the pull applies this hour alone before it swaps, and then catches up the
  // spare (the oldest tree) with the two hours it missed, after the swap.
  const s = await pullInto(spared, 3)
  const changes = hour.modified + hour.added + hour.deleted
  assert.ok(s.applied.filesWritten + s.applied.deleted <= changes + 20, `with a spare, wrote ${s.applied.filesWritten} files and deleted ${s.applied.deleted} for ${changes} changes`)
  assert.ok(s.catchUp && !s.catchUp.error && s.catchUp.id === s.id, `caught up: ${JSON.stringify(s.catchUp)}`)
  assert.ok(s.catchUp.filesWritten <= 2 * (hour.modified + hour.added) + 20)
  assert.deepEqual(treeDiff(source, spared), [])
  assert.deepEqual(treeDiff(source, join(dir, '.spared.snapshot', 'trees', s.catchUp.slot)), [], 'the caught-up spare equals the live tree')
})
