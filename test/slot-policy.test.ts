import assert from 'node:assert/strict'
import { test } from 'node:test'
import { freshState, type ReplicaState, type SlotState } from '../src/replica/replica-state.js'
import { catchUpSlot, chooseSlot, rollbackSlot } from '../src/replica/slot-policy.js'

const ready = (id: number): SlotState => ({ status: 'ready', id, digest: 'x' })
function stateWith(live: [string, number] | null, slots: Record<string, SlotState>): ReplicaState {
  const s = freshState(Object.keys(slots))
  s.slots = slots
  s.live = live ? { slot: live[0], id: live[1], since: '' } : null
  return s
}

test('two trees: build in the previous tree, never catch up (no spare)', () => {
  const s = stateWith(['a', 5], { a: ready(5), b: ready(4) })
  assert.equal(chooseSlot(s), 'b')
  assert.equal(rollbackSlot(s), 'b')
  assert.equal(catchUpSlot(s, ['a', 'b']), null)
})

test('three trees: the rollback tree is kept, the caught-up spare is built in', () => {
  const steady = stateWith(['c', 7], { a: ready(7), b: ready(6), c: ready(7) })
  assert.equal(rollbackSlot(steady), 'b')
  assert.equal(chooseSlot(steady), 'a', 'the spare holds the live snapshot: one hour to replay')
  assert.equal(catchUpSlot(steady, ['a', 'b', 'c']), null, 'a tree already holds the live snapshot')

  const afterSwap = stateWith(['a', 8], { a: ready(8), b: ready(6), c: ready(7) })
  assert.equal(catchUpSlot(afterSwap, ['a', 'b', 'c']), 'b', 'the oldest tree is caught up; the newest older one stays for rollback')
  assert.equal(rollbackSlot(afterSwap), 'c')
  assert.equal(chooseSlot(afterSwap), 'b', 'without a catch-up the next build still spares the rollback tree')
})

test('three trees, first pulls: an empty spare is filled after the swap, never the live tree', () => {
  const first = stateWith(['a', 1], { a: ready(1), b: { status: 'empty' }, c: { status: 'empty' } })
  assert.equal(rollbackSlot(first), null)
  assert.equal(catchUpSlot(first, ['a', 'b', 'c']), 'b')
  const second = stateWith(['b', 2], { a: ready(1), b: ready(2), c: { status: 'empty' } })
  assert.equal(catchUpSlot(second, ['a', 'b', 'c']), 'c')
  assert.equal(chooseSlot(stateWith(null, { a: { status: 'empty' }, b: { status: 'empty' }, c: { status: 'empty' } })), 'a')
})

test('a dirty spare is replayed from where it started; a newer staged tree blocks a catch-up', () => {
  const dirty = stateWith(['a', 9], { a: ready(9), b: ready(8), c: { status: 'dirty', base: 7, target: 9 } })
  assert.equal(catchUpSlot(dirty, ['a', 'b', 'c']), 'c')
  assert.equal(chooseSlot(dirty), 'c')
  const staged = stateWith(['a', 9], { a: ready(9), b: ready(8), c: ready(10) })
  assert.equal(catchUpSlot(staged, ['a', 'b', 'c']), null)
  assert.equal(chooseSlot(staged), 'c')
})

test('four trees keep two older snapshots for rollback and one spare', () => {
  const s = stateWith(['d', 10], { a: ready(7), b: ready(8), c: ready(9), d: ready(10) })
  assert.equal(catchUpSlot(s, ['a', 'b', 'c', 'd']), 'a')
  assert.equal(rollbackSlot(s), 'c')
})

// Which tree a new replica fills after its first swap, and what two trees keep afterwards (issue 15).
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
