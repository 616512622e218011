import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { UsageError } from '../src/core/errors.js'
import { checkCronExpression, checkTimezone, cronTrigger, formatRunReport, startScheduler, type Clock, type RunReport, type TriggerHandlers } from '../src/schedule/scheduler.js'
import { BIN, runJson, startServe } from './helpers/cli.js'
import { treeDiff, writeTree } from './helpers/tree.js'

/** A wall clock the test moves by hand; sleeps end when it passes their deadline. */
class FakeClock implements Clock {
  t = Date.UTC(2030, 0, 1, 9, 30)
  private timers: { at: number; done: () => void }[] = []
  now = (): number => this.t
  sleep = (ms: number, signal: AbortSignal): Promise<void> =>
    new Promise((resolve) => {
      if (signal.aborted) return resolve()
      const timer = { at: this.t + ms, done: resolve }
      this.timers.push(timer)
      signal.addEventListener('abort', () => {
        this.timers = this.timers.filter((x) => x !== timer)
        resolve()
      })
    })
  /** Moves time forward, waking each sleeper in turn and letting its continuation run. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms
    for (;;) {
      await settle()
      const next = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at)[0]
      if (!next) break
      this.timers = this.timers.filter((x) => x !== next)
      this.t = Math.max(this.t, next.at)
      next.done()
    }
    this.t = end
    await settle()
  }
  /** A jump of the wall clock that no timer saw (the machine slept). */
  jump(ms: number): void {
    this.t += ms
  }
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
}

const HOUR = 3_600_000

/** A schedule on the hour that fires only when the test says so. */
function fakeTrigger(clock: FakeClock) {
  let handlers: TriggerHandlers | null = null
  let stopped = false
  const nextSlot = (): Date => new Date((Math.floor(clock.t / HOUR) + 1) * HOUR)
  return {
    factory: (h: TriggerHandlers) => {
      handlers = h
      return { nextRun: () => (stopped ? null : nextSlot()), stop: () => void (stopped = true) }
    },
    /** The clock reaches the next slot and the schedule fires for it. */
    async tick(): Promise<Date> {
      const slot = nextSlot()
      clock.t = slot.getTime()
      void handlers!.tick(slot)
      await settle()
      return slot
    },
    missed: (slot: Date) => handlers!.missed(slot),
    get stopped() {
      return stopped
    },
  }
}

/** A job the test finishes by hand, counting runs and the most that ever ran at once. */
function gatedJob(clock: FakeClock) {
  const starts: number[] = []
  let running = 0
  let maxRunning = 0
  let release: (() => void)[] = []
  let failNext: Error | null = null
  return {
    starts,
    get running() {
      return running
    },
    get maxRunning() {
      return maxRunning
    },
    failNext: (err: Error) => void (failNext = err),
    job: async () => {
      starts.push(clock.t)
      running++
      maxRunning = Math.max(maxRunning, running)
      try {
        await new Promise<void>((r) => release.push(r))
        const fail = failNext
        failNext = null
        if (fail) throw fail
      } finally {
        running--
      }
    },
    async finish(): Promise<void> {
      const r = release
      release = []
      for (const f of r) f()
      await settle()
    },
  }
}

function setup(opts: { jitterMs?: number; random?: () => number } = {}) {
  const clock = new FakeClock()
  const trigger = fakeTrigger(clock)
  const job = gatedJob(clock)
  const reports: RunReport[] = []
  const scheduler = startScheduler({
    job: job.job,
    cron: '0 * * * *',
    clock,
    trigger: trigger.factory,
    watchdogMs: 10_000,
    graceMs: 5_000,
    onRun: (r) => reports.push(r),
    ...opts,
  })
  return { clock, trigger, job, reports, scheduler }
}

describe('scheduler (injected clock)', () => {
  test('runs once at start, then on each tick', async () => {
    const { clock, trigger, job, reports, scheduler } = setup()
    await settle()
    assert.equal(job.starts.length, 1, 'a run at start, without waiting for the first slot')
    await job.finish()
    assert.equal(reports[0]?.reason, 'start')
    assert.deepEqual(reports[0]?.next, new Date(Date.UTC(2030, 0, 1, 10)))
    const slot = await trigger.tick()
    assert.equal(job.starts.length, 2)
    assert.equal(job.starts[1], slot.getTime())
    await job.finish()
    assert.equal(reports[1]?.reason, 'scheduled')
    assert.equal(reports[1]?.ok, true)
    await clock.advance(30_000)
    assert.equal(job.starts.length, 2, 'the watchdog stays quiet while the schedule keeps time')
    await scheduler.stop()
    assert.ok(trigger.stopped)
  })

  test('no overlap when a run outlasts the period: slots that came meanwhile fold into one follow-up run', async () => {
    const { clock, trigger, job, reports, scheduler } = setup()
    await settle()
    await trigger.tick() // during the start run
    await trigger.tick()
    await clock.advance(HOUR / 2) // and the watchdog sees the run, not a missed slot
    assert.equal(job.starts.length, 1)
    assert.equal(job.maxRunning, 1)
    await job.finish()
    assert.equal(reports[0]?.next, 'now')
    assert.equal(job.starts.length, 2, 'one follow-up for the two slots')
    assert.equal(job.running, 1)
    await job.finish()
    assert.equal(reports[1]?.reason, 'catch-up')
    assert.equal(job.starts.length, 2)
    assert.equal(job.maxRunning, 1)
    await scheduler.stop()
  })

  test('a slot missed while the machine slept is caught up at once, by the watchdog', async () => {
    const { clock, job, reports, scheduler } = setup()
    await settle()
    await job.finish()
    clock.jump(2 * HOUR) // asleep from 9:30 to 11:30: no tick came, timers did not move
    await clock.advance(10_000) // the first watchdog round after the wake-up
    assert.equal(job.starts.length, 2)
    await job.finish()
    assert.equal(reports[1]?.reason, 'catch-up')
    assert.deepEqual(reports[1]?.slot, new Date(Date.UTC(2030, 0, 1, 10)))
    assert.deepEqual(reports[1]?.next, new Date(Date.UTC(2030, 0, 1, 12)), 'then back on schedule')
    await clock.advance(60_000)
    assert.equal(job.starts.length, 2, 'caught up once, not once per missed slot')
    await scheduler.stop()
  })

  test('a slot the schedule reports missed (blocked loop) is caught up at once, unless a run already covers it', async () => {
    const { clock, trigger, job, reports, scheduler } = setup()
    await settle()
    await job.finish()
    clock.t = Date.UTC(2030, 0, 1, 10, 0, 3)
    trigger.missed(new Date(Date.UTC(2030, 0, 1, 10)))
    await settle()
    assert.equal(job.starts.length, 2)
    await job.finish()
    assert.equal(reports[1]?.reason, 'catch-up')
    trigger.missed(new Date(Date.UTC(2030, 0, 1, 10))) // reported again (a late watchdog, node-cron): already covered
    await settle()
    assert.equal(job.starts.length, 2)
    await scheduler.stop()
  })

  test('start and catch-up runs do not wait for the jitter', async () => {
    const { clock, job, reports, scheduler } = setup({ jitterMs: 30_000, random: () => 0.999 })
    await settle()
    assert.equal(job.starts.length, 1, 'at once at start')
    await job.finish()
    clock.jump(2 * HOUR)
    const woke = clock.t
    await clock.advance(10_000) // the watchdog's timer was due: it fires on waking
    assert.equal(job.starts.length, 2, 'at once when the watchdog finds a missed slot')
    assert.equal(job.starts[1], woke)
    await job.finish()
    assert.equal(reports[1]?.reason, 'catch-up')
    await scheduler.stop()
  })

  test('the jitter delay is floor(random * jitter), so it stays in [0, jitter)', async () => {
    for (const [r, expected] of [
      [0, 0],
      [0.5, 15_000],
      [0.999999, 29_999],
    ] as const) {
      const { clock, trigger, job, scheduler } = setup({ jitterMs: 30_000, random: () => r })
      await settle()
      await job.finish()
      const slot = await trigger.tick()
      if (expected > 0) {
        await clock.advance(expected - 1)
        assert.equal(job.starts.length, 1, `random ${r}: not before ${expected} ms`)
        await clock.advance(1)
      }
      assert.equal(job.starts.length, 2, `random ${r}: runs at ${expected} ms`)
      assert.equal(job.starts[1]! - slot.getTime(), expected)
      await job.finish()
      await scheduler.stop()
    }
  })

  test('a slot that comes during the jitter wait is covered by the run about to start', async () => {
    const { clock, trigger, job, scheduler } = setup({ jitterMs: 30_000, random: () => 0.5 })
    await settle()
    await job.finish()
    const slot = await trigger.tick()
    trigger.missed(slot)
    await clock.advance(15_000)
    assert.equal(job.starts.length, 2)
    await job.finish()
    assert.equal(job.starts.length, 2)
    await scheduler.stop()
  })

  test('a failed run is reported with its error and code, and the schedule goes on', async () => {
    const { trigger, job, reports, scheduler } = setup()
    await settle()
    job.failNext(new UsageError('the source is gone'))
    await job.finish()
    assert.equal(reports[0]?.ok, false)
    assert.ok(reports[0]?.error instanceof UsageError)
    assert.match(formatRunReport(reports[0]!), /first run started .*: failed after .*\[ERR_USAGE\] the source is gone; next run at 2030-01-01T10:00:00.000Z/)
    await trigger.tick()
    await job.finish()
    assert.equal(reports[1]?.ok, true)
    await scheduler.stop()
  })

  test('stop waits for the running job, starts nothing more, and cancels a jitter wait', async () => {
    const { trigger, job, reports, scheduler } = setup()
    await settle()
    await trigger.tick() // a follow-up is owed...
    let stopped = false
    const stopping = scheduler.stop().then(() => (stopped = true))
    await settle()
    assert.equal(stopped, false, 'the run in progress is not abandoned')
    assert.ok(trigger.stopped)
    assert.equal(scheduler.busy(), true)
    await job.finish()
    await stopping
    assert.equal(stopped, true)
    assert.equal(job.starts.length, 1, '...but not started once stopping')
    assert.equal(reports.length, 1)
    assert.equal(scheduler.busy(), false)

    const s2 = setup({ jitterMs: 60_000, random: () => 0.5 })
    await settle()
    await s2.job.finish()
    await s2.trigger.tick()
    assert.equal(s2.scheduler.busy(), true) // waiting out the jitter
    await s2.scheduler.stop() // returns without waiting 30 s and without running
    assert.equal(s2.job.starts.length, 1)
  })
})

describe('schedule flags', () => {
  test('cron expressions and time zones are checked up front', () => {
    assert.equal(checkCronExpression('0 * * * *'), '0 * * * *')
    assert.equal(checkCronExpression('*/1 * * * * *'), '*/1 * * * * *')
    assert.throws(() => checkCronExpression('every hour'), /not a cron expression/)
    assert.throws(() => checkCronExpression('61 * * * *'), /not a cron expression/)
    assert.equal(checkTimezone('Europe/Paris'), 'Europe/Paris')
    assert.throws(() => checkTimezone('Mars/Olympus'), /not a time zone/)
  })

  test('the node-cron trigger reports its next slot in the given time zone', () => {
    const trigger = cronTrigger('0 0 * * *', 'Asia/Tokyo')({ tick: async () => {}, missed: () => {} })
    try {
      const next = trigger.nextRun()
      assert.ok(next)
      assert.equal(next.getUTCHours(), 15, 'midnight in Tokyo is 15:00 UTC')
      assert.ok(next.getTime() > Date.now() && next.getTime() <= Date.now() + 86_400_000)
    } finally {
      trigger.stop()
    }
    assert.equal(trigger.nextRun(), null)
  })
})

/** Spawns a long-running command; collects its output; stops it with a signal, bounded in time. */
function spawnLong(args: string[]) {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return {
    get stdout() {
      return stdout
    },
    get stderr() {
      return stderr
    },
    lines: () => stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>),
    /** Waits until `ok()` holds, polling, or fails after `ms`. */
    async until(ok: () => boolean, ms: number, what: string): Promise<void> {
      const deadline = Date.now() + ms
      while (!ok()) {
        if (child.exitCode !== null) throw new Error(`exited ${child.exitCode} while waiting for ${what}\n${stderr}`)
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${stderr}`)
        await new Promise((r) => setTimeout(r, 50))
      }
    },
    async stop(signal: NodeJS.Signals): Promise<number | null> {
      child.kill(signal)
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      try {
        return await exited
      } finally {
        clearTimeout(timer)
      }
    },
    kill: () => child.kill('SIGKILL'),
  }
}

describe('build --cron and pull --cron through the CLI', () => {
  test('a scheduled build snapshots changes between ticks and stops cleanly on SIGTERM', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'snapshot-cron-build-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const source = join(dir, 'master')
    const store = join(dir, 'store')
    mkdirSync(store)
    writeTree(source, { 'a.m3u': 'a\n', 'sub/b.m3u': 'b\n' })
    const keys = join(dir, 'keys')
    await runJson(['keygen', '--out', keys])

    const build = spawnLong(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--cron', '*/1 * * * * *', '--json'])
    t.after(() => build.kill())
    await build.until(() => build.lines().length >= 1, 10_000, 'the first build')
    assert.equal(build.lines()[0]?.created, true)
    writeTree(source, { 'c.m3u': 'added between ticks\n' })
    writeFileSync(join(source, 'a.m3u'), 'a, edited\n')
    await build.until(() => build.lines().some((l) => l.created === true && l.id === 2), 10_000, 'a snapshot of the change')
    // The two writes above may straddle a tick (then the edit is snapshot 3); after the last
    // change, ticks must find nothing new: a tree that keeps making snapshots never gets here.
    const sinceLastCreated = (): number => {
      const lines = build.lines()
      let last = -1
      for (let i = 0; i < lines.length; i++) if (lines[i]!.created === true) last = i
      return lines.length - 1 - last
    }
    await build.until(() => sinceLastCreated() >= 1, 10_000, 'a further tick with nothing new')
    assert.equal(await build.stop('SIGTERM'), 0, build.stderr)
    // A first run that outlasts its second ends with "a slot passed meanwhile" instead.
    assert.match(build.stderr, /first run started .*: done in .*; (next run at |a slot passed meanwhile)/)
    assert.match(build.stderr, /(scheduled run|catch-up run \(for [^)]*\)) started .*: done in /)
    assert.match(build.stderr, /SIGTERM: stopping/)
    const created = build.lines().filter((l) => l.created === true).map((l) => l.id)
    assert.ok(created.length === 2 || created.length === 3, `snapshots made: ${JSON.stringify(created)}`)

    const replica = join(dir, 'replica')
    const p = await runJson<{ action: string; id: number }>(['pull', '--from', store, '--target', replica, '--pubkey', join(keys, 'snapshot.pub'), '--swap'])
    assert.equal(p.action, 'swapped')
    assert.equal(p.id, created[created.length - 1])
    assert.deepEqual(treeDiff(source, replica), [])
  })

  test('a scheduled pull follows the store over HTTP and stops cleanly on SIGTERM', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'snapshot-cron-pull-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const source = join(dir, 'master')
    const store = join(dir, 'store')
    mkdirSync(store)
    writeTree(source, { 'a.m3u': 'a\n', 'sub/b.m3u': 'b\n' })
    const keys = join(dir, 'keys')
    await runJson(['keygen', '--out', keys])
    const build = () => runJson(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key')])
    await build()
    const server = await startServe(store)
    t.after(() => server.stop())

    const replica = join(dir, 'replica')
    const pull = spawnLong(['pull', '--from', server.url, '--target', replica, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--cron', '*/1 * * * * *', '--jitter', '0', '--json'])
    t.after(() => pull.kill())
    await pull.until(() => pull.lines().some((l) => l.action === 'swapped' && l.id === 1), 10_000, 'the first pull')
    writeTree(source, { 'c.m3u': 'new\n' })
    await build()
    await pull.until(() => pull.lines().some((l) => l.action === 'swapped' && l.id === 2), 10_000, 'the pull of snapshot 2')
    await pull.until(() => pull.lines().at(-1)?.action === 'up-to-date', 10_000, 'an up-to-date tick')
    assert.equal(await pull.stop('SIGTERM'), 0, pull.stderr)
    assert.deepEqual(treeDiff(source, replica), [])
  })
})
