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
  mkdirSync(store)
  await generateCorpus({ files: FILES, out: source, seed: 'flat' })
  await settle()
  const build = () => runJson<{ id: number; filesRead: number; changed: number; deleted: number }>(['build', '--source', source, '--store', store, '--quiet'])
  const pull = () => runJson<{ id: number; applied: { filesWritten: number; deleted: number } }>(['pull', '--from', store, '--target', replica, '--swap', '--quiet'])

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
  const p = await pull()
  // The recycled tree replays the last two hours: at most twice the changes, never the tree.
  assert.ok(p.applied.filesWritten <= 2 * (hour.modified + hour.added) + 20, `wrote ${p.applied.filesWritten} files for ${hour.modified + hour.added} changes`)
  assert.ok(p.applied.filesWritten < FILES / 20)
  assert.deepEqual(treeDiff(source, replica), [])
})
