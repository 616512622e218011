import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ExitCode } from '../src/core/errors.js'
import { afterProbe, afterPull, backoffMs, initialWatchState, type PointerVersion, type WatchConfig, type WatchState } from '../src/replica/watch-policy.js'

const config: WatchConfig = { intervalMs: 5_000, backoffBaseMs: 1_000, backoffMaxMs: 15_000, minHeldCycleMs: 1_000, random: () => 0.5 }
const v1: PointerVersion = { digest: 'd1', etag: '"e1"' }
const v2: PointerVersion = { digest: 'd2', etag: '"e2"' }

/** The watch after its first pull of v1. */
function upAt(v: PointerVersion): WatchState {
  const probed = afterProbe(initialWatchState(), { kind: 'fresh', version: v }, 5, config)
  assert.deepEqual(probed.step, { kind: 'pull' })
  return afterPull(probed.state, { kind: 'ok', stale: false }, config).state
}

test('a fresh pointer is pulled, then handled: the next probe sends its ETag and comes at once', () => {
  const d = afterProbe(initialWatchState(), { kind: 'fresh', version: v1 }, 5, config)
  assert.deepEqual(d.step, { kind: 'pull' })
  assert.equal(d.state.handled, null, 'not handled before the pull ends')
  const after = afterPull(d.state, { kind: 'ok', stale: false }, config)
  assert.deepEqual(after.state.handled, v1)
  assert.deepEqual(after.step, { kind: 'probe', afterMs: 0 })
  assert.equal(after.log, null)
})

test('a held 304 is renewed at once, but never more than one cycle per second; an unheld 304 waits the interval', () => {
  const s = upAt(v1)
  assert.deepEqual(afterProbe(s, { kind: 'unchanged', held: true }, 30_000, config).step, { kind: 'probe', afterMs: 0 })
  assert.deepEqual(afterProbe(s, { kind: 'unchanged', held: true }, 200, config).step, { kind: 'probe', afterMs: 800 })
  const unheld = afterProbe(s, { kind: 'unchanged', held: false }, 3, config)
  assert.deepEqual(unheld.step, { kind: 'probe', afterMs: 5_000 })
  assert.equal(unheld.log, null)
})

test('an unreachable store: one line when it goes, backoff doubling to the cap, one line when it is back, then a pull', () => {
  let s = upAt(v1)
  const lines: string[] = []
  const delays: number[] = []
  for (let i = 0; i < 8; i++) {
    const d = afterProbe(s, { kind: 'error', message: 'ECONNREFUSED' }, 1, config)
    s = d.state
    if (d.log) lines.push(d.log)
    assert.equal(d.step.kind, 'probe')
    if (d.step.kind === 'probe') delays.push(d.step.afterMs)
  }
  assert.equal(lines.length, 1)
  assert.match(lines[0]!, /unreachable \(ECONNREFUSED\)/)
  assert.deepEqual(delays, [750, 1_500, 3_000, 6_000, 11_250, 11_250, 11_250, 11_250]) // random 0.5: 3/4 of the ceiling
  const back = afterProbe(s, { kind: 'fresh', version: v2 }, 1, config)
  assert.deepEqual(back.step, { kind: 'pull' })
  assert.match(back.log ?? '', /answers again/)
  const pulled = afterPull(back.state, { kind: 'ok', stale: false }, config)
  assert.equal(pulled.log, null, 'the recovery was said once')
  assert.equal(pulled.state.failures, 0)
  assert.deepEqual(pulled.state.handled, v2)
})

test('the store coming back with the same pointer logs the recovery and does not pull', () => {
  let s = upAt(v1)
  s = afterProbe(s, { kind: 'error', message: 'ETIMEDOUT' }, 1, config).state
  const d = afterProbe(s, { kind: 'unchanged', held: true }, 1_500, config)
  assert.match(d.log ?? '', /answers again/)
  assert.equal(d.state.health, 'up')
  assert.equal(d.state.failures, 0)
})

test('a refused snapshot is handled, said once, and not fetched again until another publication', () => {
  for (const exitCode of [ExitCode.VerifyFailed, ExitCode.Refused, ExitCode.GuardTripped, ExitCode.HookVeto, ExitCode.NoSpace, ExitCode.NoSnapshot]) {
    const s = upAt(v1)
    const probed = afterProbe(s, { kind: 'fresh', version: v2 }, 1, config)
    const d = afterPull(probed.state, { kind: 'failed', exitCode, code: 'ERR_X', message: 'no' }, config)
    assert.deepEqual(d.state.handled, v2, `exit ${exitCode}: the refused pointer counts as handled`)
    assert.match(d.log ?? '', /waiting for the next publication/)
    assert.equal(d.step.kind, 'probe')
    if (d.step.kind === 'probe') assert.ok(d.step.afterMs >= config.intervalMs)
    // The same pointer again (a 304 for its ETag) pulls nothing.
    assert.equal(afterProbe(d.state, { kind: 'unchanged', held: false }, 1, config).step.kind, 'probe')
  }
})

test('a store that keeps publishing refused pointers is met with a growing delay, not a hot loop', () => {
  let s = upAt(v1)
  const delays: number[] = []
  for (let i = 0; i < 8; i++) {
    const probed = afterProbe(s, { kind: 'fresh', version: { digest: `bad${i}`, etag: `"bad${i}"` } }, 1, config)
    assert.deepEqual(probed.step, { kind: 'pull' })
    const d = afterPull(probed.state, { kind: 'failed', exitCode: ExitCode.VerifyFailed, code: 'ERR_SIGNATURE', message: 'bad signature' }, config)
    s = d.state
    if (d.step.kind === 'probe') delays.push(d.step.afterMs)
  }
  assert.ok(delays.every((ms) => ms >= config.intervalMs))
  assert.equal(delays.at(-1), 11_250)
  const ok = afterPull(afterProbe(s, { kind: 'fresh', version: v2 }, 1, config).state, { kind: 'ok', stale: false }, config)
  assert.equal(ok.state.refusals, 0)
})

test('a pull that fails on the network or a lock keeps the pointer unhandled and backs off; the same failure logs once', () => {
  const s = upAt(v1)
  const probed = afterProbe(s, { kind: 'fresh', version: v2 }, 1, config)
  const net = afterPull(probed.state, { kind: 'failed', exitCode: ExitCode.Network, code: 'ERR_NETWORK', message: 'gave up' }, config)
  assert.deepEqual(net.state.handled, v1, 'not handled: the next probe gets it again')
  assert.equal(net.state.health, 'down')
  assert.match(net.log ?? '', /unreachable during a pull/)
  let t = afterPull(afterProbe(s, { kind: 'fresh', version: v2 }, 1, config).state, { kind: 'failed', exitCode: ExitCode.Locked, code: 'ERR_LOCKED', message: 'held by pid 7' }, config)
  assert.match(t.log ?? '', /pull failed \(\[ERR_LOCKED\]/)
  t = afterPull(afterProbe(t.state, { kind: 'fresh', version: v2 }, 1, config).state, { kind: 'failed', exitCode: ExitCode.Locked, code: 'ERR_LOCKED', message: 'held by pid 7' }, config)
  assert.equal(t.log, null)
  assert.equal(t.state.failures, 2)
  const ok = afterPull(afterProbe(t.state, { kind: 'fresh', version: v2 }, 1, config).state, { kind: 'ok', stale: true }, config)
  assert.equal(ok.log, 'recovered')
  assert.deepEqual(ok.state.handled, v2)
})

test('the same bytes under a new ETag pull nothing, and the new ETag is sent from then on', () => {
  const s = upAt(v1)
  const d = afterProbe(s, { kind: 'fresh', version: { digest: v1.digest, etag: '"other-edge"' } }, 1, config)
  assert.equal(d.step.kind, 'probe')
  assert.equal(d.state.handled?.etag, '"other-edge"')
})

test('no snapshot yet: said once, checked at the interval', () => {
  const a = afterProbe(initialWatchState(), { kind: 'absent' }, 1, config)
  assert.match(a.log ?? '', /no snapshot yet/)
  assert.deepEqual(a.step, { kind: 'probe', afterMs: 5_000 })
  assert.equal(afterProbe(a.state, { kind: 'absent' }, 1, config).log, null)
  assert.deepEqual(afterProbe(a.state, { kind: 'fresh', version: v1 }, 1, config).step, { kind: 'pull' })
})

test('backoff stays within the cap whatever the attempt count', () => {
  for (const attempt of [1, 2, 10, 100, 10_000]) {
    const ms = backoffMs(attempt, { ...config, random: () => 0.999 })
    assert.ok(ms > 0 && ms <= config.backoffMaxMs, `attempt ${attempt}: ${ms}`)
  }
})

test('a usage error ends the watch instead of retrying it', () => {
  const s = upAt(v1)
  const d = afterPull(afterProbe(s, { kind: 'fresh', version: v2 }, 1, config).state, { kind: 'failed', exitCode: ExitCode.Usage, code: 'ERR_USAGE', message: 'cannot read /etc/snapshot/snapshot.pub' }, config)
  assert.equal(d.step.kind, 'stop')
  if (d.step.kind === 'stop') assert.equal(d.step.exitCode, ExitCode.Usage)
  assert.match(d.log ?? '', /stopping the watch/)
})
