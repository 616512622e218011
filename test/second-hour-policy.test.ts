import assert from 'node:assert/strict'
import { test } from 'node:test'
import { freshState, type ReplicaState, type SlotState } from '../src/replica/replica-state.js'
import { catchUpSlot, chooseSlot, rollbackSlot } from '../src/replica/slot-policy.js'

/** Which tree a new replica fills after its first swap, and what two trees keep afterwards (issue 15). */
const ready = (id: number): SlotState => ({ status: 'ready', id, digest: 'x' })
function stateWith(live: [string, number] | null, slots: Record<string, SlotState>): ReplicaState {
  const s = freshState(Object.keys(slots))
  s.slots = slots
  s.live = live ? { slot: live[0], id: live[1], since: '' } : null
  return s
}

test('two trees, after the first swap: the empty second tree is filled, and the second pull builds on it', () => {
  const first = stateWith(['a', 1], { a: ready(1), b: { status: 'empty' } })
  assert.equal(rollbackSlot(first), null)
  assert.equal(catchUpSlot(first, ['a', 'b']), 'b')
  const filled = stateWith(['a', 1], { a: ready(1), b: ready(1) })
  assert.equal(catchUpSlot(filled, ['a', 'b']), null, 'already at the live snapshot')
  assert.equal(chooseSlot(filled), 'b', 'one hour to apply')
})

test('two trees, from the second swap on: the other tree is the rollback tree, never caught up', () => {
  const second = stateWith(['b', 2], { a: ready(1), b: ready(2) })
  assert.equal(rollbackSlot(second), 'a')
  assert.equal(catchUpSlot(second, ['a', 'b']), null)
  assert.equal(chooseSlot(second), 'a', 'two trees leave nowhere else to build: after that swap, b is the rollback tree')
})

test('two trees: a fill that did not finish is still the spare (the next pull builds in it); a tree left by a rollback is kept', () => {
  const crashed = stateWith(['a', 1], { a: ready(1), b: { status: 'dirty', base: null, target: 1 } })
  assert.equal(catchUpSlot(crashed, ['a', 'b']), 'b')
  assert.equal(chooseSlot(crashed), 'b')
  const rolledBack = stateWith(['a', 1], { a: ready(1), b: ready(2) })
  assert.equal(catchUpSlot(rolledBack, ['a', 'b']), null, 'the newer tree a rollback left stays as it is')
})

test('never the live tree nor the rollback tree, whatever the number of trees', () => {
  for (let n = 2; n <= 6; n++) {
    const names = Array.from({ length: n }, (_, i) => String.fromCharCode(97 + i))
    for (let liveAt = 0; liveAt < n; liveAt++) {
      for (let emptyAt = -1; emptyAt < n; emptyAt++) {
        const slots: Record<string, SlotState> = {}
        names.forEach((s, i) => (slots[s] = i === emptyAt && i !== liveAt ? { status: 'empty' } : ready(i === liveAt ? 100 : 90 + i)))
        const state = stateWith([names[liveAt]!, 100], slots)
        const spare = catchUpSlot(state, names)
        assert.notEqual(spare, names[liveAt])
        if (spare !== null) assert.notEqual(spare, rollbackSlot(state))
        assert.notEqual(chooseSlot(state), names[liveAt])
        if (n > 2) assert.notEqual(chooseSlot(state), rollbackSlot(state))
      }
    }
  }
})
