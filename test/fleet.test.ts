import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { fleetExitCode, fleetProblems, fleetRow, type FetchedStatus, type StoreView } from '../src/metrics/fleet-evaluate.js'
import { runCli, runJson, startServe } from './helpers/cli.js'
import { eventually, getText, startMetricsProcess, type MetricsProcess } from './helpers/metrics-processes.js'
import { writeTree } from './helpers/tree.js'

const NOW = Date.parse('2026-01-01T12:00:00Z')
const at = (minutesAgo: number): string => new Date(NOW - minutesAgo * 60_000).toISOString()
const limits = { maxAgeSeconds: 3 * 3600, maxLagSeconds: 900 }
const store: StoreView = { latest: 12, snapshots: [10, 11, 12].map((id) => ({ id, created: at((12 - id) * 60 + 5) })) }
const replica = (live: number | null, extra: Partial<FetchedStatus> = {}): FetchedStatus => ({
  target: '/srv/p',
  live: live === null ? null : { id: live, created: store.snapshots.find((s) => s.id === live)?.created ?? at(600) },
  pinned: null,
  lastPull: null,
  ...extra,
})

describe('fleet: rows, problems, exit code (pure)', () => {
  test('a current replica is fine; one behind for longer than --max-lag is lagging, measured from the oldest snapshot it lacks', () => {
    const rows = [fleetRow({ url: 'a', status: replica(12) }, store, NOW), fleetRow({ url: 'b', status: replica(10) }, store, NOW)]
    assert.deepEqual([rows[0]!.lagSnapshots, rows[0]!.lagSeconds], [0, 0])
    assert.deepEqual([rows[1]!.lagSnapshots, rows[1]!.lagSeconds], [2, 65 * 60], 'snapshot 11 came out 65 minutes ago')
    const problems = fleetProblems(rows, limits)
    assert.deepEqual(problems.map((p) => [p.url, p.kind]), [['b', 'lagging']])
    assert.equal(fleetExitCode(problems), 16)
    assert.equal(fleetExitCode(fleetProblems(rows.slice(0, 1), limits)), 0)
  })

  test('behind, but for less than --max-lag, is not a problem', () => {
    const fresh: StoreView = { latest: 13, snapshots: [...store.snapshots, { id: 13, created: at(2) }] }
    const row = fleetRow({ url: 'a', status: replica(12) }, fresh, NOW)
    assert.deepEqual([row.lagSnapshots, row.lagSeconds], [1, 120])
    assert.deepEqual(fleetProblems([row], limits), [])
  })

  test('unreachable, stale, pinned, and nothing live yet are each named', () => {
    const rows = [
      fleetRow({ url: 'down', error: 'ECONNREFUSED' }, store, NOW),
      fleetRow({ url: 'old', status: { ...replica(12), live: { id: 12, created: at(4 * 60) } } }, null, NOW),
      fleetRow({ url: 'pinned', status: replica(11, { pinned: { id: 11, since: at(30), reason: 'rollback' } }) }, store, NOW),
      fleetRow({ url: 'empty', status: replica(null) }, store, NOW),
    ]
    const problems = fleetProblems(rows, limits)
    assert.deepEqual(problems.map((p) => [p.url, p.kind]), [['down', 'unreachable'], ['old', 'stale'], ['pinned', 'pinned'], ['empty', 'stale'], ['empty', 'lagging']])
    assert.equal(fleetProblems(rows, { ...limits, maxAgeSeconds: 0 }).some((p) => p.url === 'old'), false, '--max-age 0 turns staleness off')
  })

  test('without --from, a replica is compared with the store as its own last pull saw it', () => {
    const row = fleetRow({ url: 'a', status: replica(11, { store: { latestId: 12, created: at(30) }, lastOutcome: { at: at(1), exitCode: 4, code: 'ERR_NETWORK', error: 'down' } }) }, null, NOW)
    assert.deepEqual([row.latestId, row.lagSnapshots, row.lagSeconds], [12, 1, 1800])
    assert.deepEqual(row.lastPull, { at: at(1), exitCode: 4, code: 'ERR_NETWORK', error: 'down' })
    assert.deepEqual(fleetProblems([row], limits).map((p) => p.kind), ['lagging'])
  })
})

describe('fleet: three real replicas', () => {
  test('one stopped and one pinned: fleet names exactly those two and exits 16', { timeout: 120_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'snapshot-fleet-'))
    const procs: MetricsProcess[] = []
    let serve: Awaited<ReturnType<typeof startServe>> | undefined
    t.after(async () => {
      for (const p of procs) await p.stop()
      await serve?.stop()
      rmSync(dir, { recursive: true, force: true })
    })
    const src = join(dir, 'src')
    const store = join(dir, 'store')
    const pub = join(dir, 'keys/snapshot.pub')
    writeTree(src, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`d${i % 2}/p${i}.m3u`, `#EXTM3U\n${i}\n`])))
    await runJson(['keygen', '--out', join(dir, 'keys')])
    const build = () => runJson(['build', '--source', src, '--store', store, '--key', join(dir, 'keys/snapshot.key')])
    await build()
    serve = await startServe(store)
    const targets = ['r0', 'r1', 'r2'].map((n) => join(dir, n))
    for (const target of targets) await runJson(['pull', '--from', serve.url, '--target', target, '--pubkey', pub, '--swap'])
    writeFileSync(join(src, 'd0/p0.m3u'), '#EXTM3U\nnew\n')
    await build()
    // Each replica runs as a service would: pull --cron, pulling at start (to snapshot 2), then yearly.
    for (const target of targets) procs.push(await startMetricsProcess(['pull', '--from', serve.url, '--target', target, '--pubkey', pub, '--swap', '--cron', '0 0 1 1 *']))
    for (const p of procs) {
      await eventually(`the first pull of ${p.url}`, async () => {
        const s = JSON.parse((await getText(`${p.url}/status`)).body) as { live: { id: number } | null; lastOutcome: unknown }
        return s.lastOutcome !== null && s.live?.id === 2 ? true : undefined
      })
    }
    const urls = procs.map((p) => p.url)
    const fleet = (extra: string[] = []) => runCli(['fleet', ...urls.flatMap((u) => ['--replica', u]), '--from', serve!.url, '--pubkey', pub, ...extra])

    const healthy = await fleet(['--json'])
    assert.equal(healthy.code, 0, healthy.stdout + healthy.stderr)
    const h = JSON.parse(healthy.stdout) as { store: { latest: number }; replicas: { liveId: number; lagSnapshots: number }[]; problems: unknown[] }
    assert.equal(h.store.latest, 2)
    assert.deepEqual(h.replicas.map((r) => [r.liveId, r.lagSnapshots]), [[2, 0], [2, 0], [2, 0]])

    // r1 is rolled back (and so pinned) by hand; r2's process stops.
    await runJson(['rollback', '--target', targets[1]!])
    assert.equal(await procs[2]!.stop(), 0)

    const r = await fleet(['--json'])
    assert.equal(r.code, 16, r.stdout + r.stderr)
    const report = JSON.parse(r.stdout) as { replicas: { url: string; reachable: boolean; liveId: number | null; pinned: unknown }[]; problems: { url: string; kind: string }[] }
    assert.deepEqual(report.problems.map((p) => [p.url, p.kind]).sort(), [[urls[1], 'pinned'], [urls[2], 'unreachable']].sort())
    assert.deepEqual(report.replicas.map((x) => [x.reachable, x.liveId, x.pinned !== null]), [[true, 2, false], [true, 1, true], [false, null, false]])
    assert.match(r.stderr, /\[ERR_FLEET\]: 2 of 3 replicas need attention/)

    const human = await fleet()
    assert.equal(human.code, 16)
    const problemLines = human.stdout.split('\n').filter((l) => l.startsWith('PROBLEM'))
    assert.deepEqual(problemLines.map((l) => l.split(' ')[1]!.replace(/:$/, '')).sort(), [urls[1], urls[2]].sort())
    assert.match(human.stdout, /pinned at 1/)
    assert.match(human.stdout, /UNREACHABLE/)

    // A store that does not answer is named too; each replica is then compared with its own last view.
    const noStore = await runCli(['fleet', '--replica', urls[0]!, '--from', 'http://127.0.0.1:1', '--pubkey', pub, '--json', '--timeout', '2'])
    assert.equal(noStore.code, 16, noStore.stderr)
    const ns = JSON.parse(noStore.stdout) as { replicas: { latestId: number; lagSnapshots: number }[]; problems: { url: string; kind: string }[] }
    assert.deepEqual(ns.problems.map((p) => [p.url, p.kind]), [['http://127.0.0.1:1', 'unreachable']])
    assert.deepEqual([ns.replicas[0]!.latestId, ns.replicas[0]!.lagSnapshots], [2, 0])
    assert.match(noStore.stderr, /the store http:\/\/127\.0\.0\.1:1 did not answer; 0 of 1 replicas need attention/)
  })
})
