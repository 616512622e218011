import assert from 'node:assert/strict'
import { getPriority } from 'node:os'
import { test } from 'node:test'
import { atLowPriority } from '../src/replica/low-priority.js'

/** The spare's catch-up runs at the lowest CPU priority, and the priority comes back where it may. */

test('the work runs at priority 19, and the priority is raised back afterwards where allowed (root)', async () => {
  const before = getPriority()
  const during = await atLowPriority(true, async () => getPriority())
  assert.equal(during, 19)
  if (process.getuid?.() === 0) assert.equal(getPriority(), before)
})

test('disabled, the work runs at the priority it had', async () => {
  const before = getPriority()
  assert.equal(await atLowPriority(false, async () => getPriority()), before)
})

test('a failing work still has its priority restored, and its error goes through', async () => {
  const before = getPriority()
  await assert.rejects(atLowPriority(true, async () => Promise.reject(new Error('boom'))), /boom/)
  if (process.getuid?.() === 0) assert.equal(getPriority(), before)
})
