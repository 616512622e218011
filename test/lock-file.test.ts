import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { pathToFileURL } from 'node:url'
import { acquireLock } from '../src/fs/lock-file.js'

/**
 * The store and replica locks are what keep two builds from both publishing the same snapshot id.
 * Several real processes race for one lock; their held intervals must never overlap.
 */
const dir = mkdtempSync(join(tmpdir(), 'lock-file-'))
after(() => rmSync(dir, { recursive: true, force: true }))

const lockModule = pathToFileURL(join(import.meta.dirname, '..', 'src', 'fs', 'lock-file.js')).href

const TURNS = 15

/** A child that takes the lock TURNS times (polling hard), logging when it holds it and when it lets go. */
function contender(lock: string, log: string, name: string): Promise<number> {
  const script = `
    import { appendFileSync } from 'node:fs'
    const { acquireLock } = await import(${JSON.stringify(lockModule)})
    for (let turn = 0; turn < ${TURNS}; turn++) {
      const held = await acquireLock(${JSON.stringify(lock)}, 'test', { waitMs: 30000, pollMs: 0 })
      appendFileSync(${JSON.stringify(log)}, 'in ${name}\\n')
      await new Promise((r) => setTimeout(r, 1))
      appendFileSync(${JSON.stringify(log)}, 'out ${name}\\n')
      held.release()
    }
  `
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] })
    child.on('error', reject)
    child.on('exit', (code) => resolve(code ?? -1))
  })
}

test('processes racing for one lock hold it one at a time', async () => {
  for (let round = 0; round < 2; round++) {
    const lock = join(dir, `race-${round}.lock`)
    const log = join(dir, `race-${round}.log`)
    writeFileSync(log, '')
    const names = Array.from({ length: 6 }, (_, i) => `p${i}`)
    const codes = await Promise.all(names.map((n) => contender(lock, log, n)))
    assert.deepEqual(codes, names.map(() => 0))
    const lines = readFileSync(log, 'utf8').trim().split('\n')
    assert.equal(lines.length, names.length * TURNS * 2)
    for (let i = 0; i < lines.length; i += 2) {
      const who = lines[i]!.slice(3)
      assert.deepEqual([lines[i], lines[i + 1]], [`in ${who}`, `out ${who}`], `round ${round}: overlapping holders\n${lines.join('\n')}`)
    }
    assert.ok(!existsSync(lock), 'the last holder released the lock')
  }
})

test('a lock left by a dead process is taken over; a live holder is waited for, then refused', async () => {
  const lock = join(dir, 'stale.lock')
  writeFileSync(lock, `999999999 ${hostname()} 2026-01-01T00:00:00.000Z\n`)
  const held = await acquireLock(lock, 'test')
  assert.match(readFileSync(lock, 'utf8'), new RegExp(`^${process.pid} `))
  await assert.rejects(acquireLock(lock, 'the store', { waitMs: 50, pollMs: 10 }), /the store is locked by process \d+/)
  held.release()
  assert.ok(!existsSync(lock))

  writeFileSync(lock, '') // lost in a crash before its line reached the disk
  const again = await acquireLock(lock, 'test')
  again.release()
  assert.ok(!existsSync(lock))
})
