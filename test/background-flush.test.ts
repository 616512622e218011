import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { BackgroundFlush } from '../src/fs/durable.js'

/**
 * The flush kept in flight while a replica's tree is written: one shell for all its syncs, asked
 * over a pipe, so the pull never forks itself per flush; and nothing left running after close().
 */
let dir: string
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'snapshot-flush-'))
})
after(() => rmSync(dir, { recursive: true, force: true }))

/** This process's children, from Linux's /proc. */
function children(): number[] {
  const text = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim()
  return text ? text.split(' ').map(Number) : []
}

test('many flushes run through one shell, each settles, and close() ends it', async () => {
  const before = children()
  const flush = new BackgroundFlush(dir)
  const shells = new Set<number>()
  for (let i = 0; i < 40; i++) {
    writeFileSync(join(dir, `f${i}`), `${i}\n`)
    flush.nudge()
    flush.nudge() // one in flight at a time: a second nudge meanwhile starts nothing
    for (const pid of children()) if (!before.includes(pid)) shells.add(pid)
    await flush.settle()
  }
  assert.equal(shells.size, 1, `one shell for every flush, saw ${[...shells].join(', ')}`)
  await flush.close()
  assert.deepEqual(children().filter((pid) => !before.includes(pid)), [], 'the shell is gone after close()')
  await flush.close() // twice is harmless
})

test('a flush of a path that is not there settles (the shell falls back on sync), and close() without a flush is harmless', async () => {
  const flush = new BackgroundFlush(join(dir, 'no such dir', "it's \"odd\" $(true)"))
  flush.nudge()
  await flush.settle()
  await flush.close()
  await new BackgroundFlush(dir).close()
})
