import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Registry } from 'prom-client'
import { NetworkError, SignatureError, StaleError } from '../src/core/errors.js'
import { parseListenAddress } from '../src/metrics/listen-address.js'
import { createBuildMetrics, createPruneMetrics, recordBuildOutcome } from '../src/metrics/master-metrics.js'
import { parseExposition, seedFromExposition } from '../src/metrics/metrics-file.js'
import { createReplicaMetrics, recordPullOutcome } from '../src/metrics/replica-metrics.js'
import { createServeMetrics } from '../src/metrics/serve-metrics.js'
import type { PullResult } from '../src/replica/pull.js'
import { runCli, runJson, startServe } from './helpers/cli.js'
import { eventually, getText, requireTool, startMetricsProcess } from './helpers/metrics-processes.js'
import { writeTree } from './helpers/tree.js'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const sample = (samples: ReturnType<typeof parseExposition>, name: string, labels: Record<string, string> = {}): number | undefined =>
  samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value

const swapped: PullResult = {
  action: 'swapped',
  id: 7,
  previousId: 6,
  plan: { steps: [{ id: 7, use: 'delta' }], downloadBytes: 1234, baseId: 6 },
  applied: { filesWritten: 10, dirsMade: 2, linksMade: 1, deleted: 4, bytesWritten: 999 },
  latestCreated: '2026-01-01T10:00:00.000Z',
  swappedAtMs: 1,
  catchUp: null,
  seconds: 0.5,
}

describe('metrics: recording outcomes', () => {
  test('a swap, then a swap that found the store stale (exit 13), then a refused pull (exit 3), then a network failure', async () => {
    const registry = new Registry()
    const m = createReplicaMetrics(registry)
    recordPullOutcome(m, { result: swapped, error: null }, 0.5, Date.parse('2026-01-01T10:05:00Z'))
    recordPullOutcome(m, { result: swapped, error: new StaleError('old') }, 0.25, Date.parse('2026-01-01T16:00:00Z'))
    recordPullOutcome(m, { result: null, error: new SignatureError('foreign key') }, 0.1, Date.parse('2026-01-01T16:05:00Z'))
    recordPullOutcome(m, { result: null, error: new NetworkError('down') }, 0.1, Date.parse('2026-01-01T16:10:00Z'))
    const s = parseExposition(await registry.metrics())
    assert.equal(sample(s, 'snapshot_replica_pulls_total', { result: 'swapped' }), 1)
    assert.equal(sample(s, 'snapshot_replica_pulls_total', { result: 'stale' }), 1)
    assert.equal(sample(s, 'snapshot_replica_pulls_total', { result: 'verify_failed' }), 1)
    assert.equal(sample(s, 'snapshot_replica_pulls_total', { result: 'network' }), 1)
    assert.equal(sample(s, 'snapshot_replica_swaps_total'), 2, 'the stale pull still swapped')
    assert.equal(sample(s, 'snapshot_replica_refusals_total', { reason: 'ERR_SIGNATURE' }), 1)
    assert.equal(sample(s, 'snapshot_replica_refusals_total', { reason: 'ERR_NETWORK' }), undefined, 'a network failure is no refusal')
    assert.equal(sample(s, 'snapshot_replica_last_pull_exit_code'), 4)
    assert.equal(sample(s, 'snapshot_replica_last_success_timestamp_seconds'), Date.parse('2026-01-01T10:05:00Z') / 1000, 'only an exit 0 is a success')
    assert.equal(sample(s, 'snapshot_replica_downloaded_bytes_total'), 2468)
    assert.equal(sample(s, 'snapshot_replica_entries_written_total'), 26)
    assert.equal(sample(s, 'snapshot_replica_entries_deleted_total'), 8)
    assert.equal(sample(s, 'snapshot_replica_store_latest_build_timestamp_seconds'), Date.parse('2026-01-01T10:00:00Z') / 1000)
  })

  test('a failed build keeps the last success and counts the failure by its exit code', async () => {
    const registry = new Registry()
    const m = createBuildMetrics(registry)
    recordBuildOutcome(m, { result: { created: true, id: 3, kind: 'delta', parent: 2, fullReason: null, files: 1, dirs: 1, links: 0, bytes: 1, changed: 5, deleted: 2, filesRead: 5, deltaBytes: 100, fullBytes: null, warnings: [], seconds: 1, skipped: { count: 0, byReason: {} }, setIdDropped: 0, clockWentBack: null }, error: null }, 1, 1_000_000)
    recordBuildOutcome(m, { result: null, error: Object.assign(new Error('disk'), { code: 'ENOSPC' }) }, 2, 2_000_000)
    const s = parseExposition(await registry.metrics())
    assert.equal(sample(s, 'snapshot_master_builds_total', { result: 'delta' }), 1)
    assert.equal(sample(s, 'snapshot_master_builds_total', { result: 'no_space' }), 1)
    assert.equal(sample(s, 'snapshot_master_last_build_exit_code'), 5)
    assert.equal(sample(s, 'snapshot_master_last_build_timestamp_seconds'), 1000)
    assert.equal(sample(s, 'snapshot_master_last_build_kind', { kind: 'delta' }), 1)
    assert.equal(sample(s, 'snapshot_master_last_build_kind', { kind: 'full' }), 0)
    assert.equal(sample(s, 'snapshot_master_last_build_changes'), 7)
  })

  test('a metrics file carries counters and untouched gauges over to the next run', async () => {
    const first = new Registry()
    const m1 = createReplicaMetrics(first)
    recordPullOutcome(m1, { result: swapped, error: null }, 0.5, 5_000)
    const text = await first.metrics()
    const second = new Registry()
    const m2 = createReplicaMetrics(second)
    seedFromExposition(second, text)
    recordPullOutcome(m2, { result: null, error: new SignatureError('x') }, 0.1, 9_000)
    const s = parseExposition(await second.metrics())
    assert.equal(sample(s, 'snapshot_replica_pulls_total', { result: 'swapped' }), 1)
    assert.equal(sample(s, 'snapshot_replica_pulls_total', { result: 'verify_failed' }), 1)
    assert.equal(sample(s, 'snapshot_replica_swaps_total'), 1)
    assert.equal(sample(s, 'snapshot_replica_last_success_timestamp_seconds'), 5, 'the last success survives a failed run')
    assert.equal(sample(s, 'snapshot_replica_last_pull_exit_code'), 3)
  })

  test('parseExposition reads escaped label values and skips what it cannot read', () => {
    const s = parseExposition('# HELP x y\nx{a="q\\"uo\\\\te",b="n\\nl"} 2\nbroken line\ny 3 1700000000\n')
    assert.deepEqual(s, [
      { name: 'x', labels: { a: 'q"uo\\te', b: 'n\nl' }, value: 2 },
      { name: 'y', labels: {}, value: 3 },
    ])
  })

  test('--metrics-listen addresses: a bare port is 127.0.0.1; bad ones are refused', () => {
    assert.deepEqual(parseListenAddress('9100'), { host: '127.0.0.1', port: 9100 })
    assert.deepEqual(parseListenAddress(':9100'), { host: '127.0.0.1', port: 9100 })
    assert.deepEqual(parseListenAddress('0.0.0.0:9100'), { host: '0.0.0.0', port: 9100 })
    assert.deepEqual(parseListenAddress('[::1]:9100'), { host: '::1', port: 9100 })
    for (const bad of ['', 'host', '1.2.3.4:', '1.2.3.4:70000', 'a:b:9100', '::1:9100']) assert.throws(() => parseListenAddress(bad), /HOST:PORT/, bad)
  })
})

describe('metrics: the repository\'s alert rules and dashboard', () => {
  const rules = join(REPO, 'deploy/prometheus/snapshot-rules.yml')
  const dashboard = join(REPO, 'deploy/grafana/snapshot-dashboard.json')

  test('promtool checks the rules, and its unit tests see each alert fire when it should', () => {
    requireTool('promtool')
    const check = spawnSync('promtool', ['check', 'rules', rules], { encoding: 'utf8' })
    assert.equal(check.status, 0, check.stdout + check.stderr)
    assert.match(check.stdout, /SUCCESS: 7 rules found/)
    const unit = spawnSync('promtool', ['test', 'rules', 'snapshot-rules.test.yml'], { cwd: dirname(rules), encoding: 'utf8' })
    assert.equal(unit.status, 0, unit.stdout + unit.stderr)
    assert.match(unit.stdout, /SUCCESS/)
  })

  test('every snapshot_* name in the rules and the dashboard is a metric we export', async () => {
    const registry = new Registry()
    createReplicaMetrics(registry)
    createBuildMetrics(registry)
    createPruneMetrics(registry)
    createServeMetrics(registry)
    const known = new Set(registry.getMetricsAsArray().map((m) => (m as unknown as { name: string }).name))
    const d = JSON.parse(readFileSync(dashboard, 'utf8')) as { panels: { targets?: { expr: string }[] }[] }
    const exprs = d.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr))
    assert.ok(exprs.length >= 15)
    for (const text of [readFileSync(rules, 'utf8'), ...exprs]) {
      for (const name of text.match(/\bsnapshot_[a-z_]+/g) ?? []) if (!name.startsWith('snapshot_unpin')) assert.ok(known.has(name), `${name} is not exported`)
    }
  })
})

describe('metrics: through the CLI', () => {
  test('build and prune write their metrics file atomically, and counters go on across runs', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'snapshot-metrics-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const src = join(dir, 'src')
    const store = join(dir, 'store')
    const prom = join(dir, 'textfile', 'master.prom')
    mkdirSync(dirname(prom))
    writeTree(src, { 'a/1.m3u': 'one\n', 'a/2.m3u': 'two\n' })
    await runJson(['build', '--source', src, '--store', store, '--metrics-file', prom])
    writeFileSync(join(src, 'a/3.m3u'), 'three\n')
    await runJson(['build', '--source', src, '--store', store, '--metrics-file', prom])
    await runJson(['build', '--source', src, '--store', store, '--metrics-file', prom])
    const s = parseExposition(readFileSync(prom, 'utf8'))
    assert.equal(sample(s, 'snapshot_master_builds_total', { result: 'full' }), 1)
    assert.equal(sample(s, 'snapshot_master_builds_total', { result: 'delta' }), 1)
    assert.equal(sample(s, 'snapshot_master_builds_total', { result: 'unchanged' }), 1)
    assert.equal(sample(s, 'snapshot_master_latest_id'), 2)
    assert.equal(sample(s, 'snapshot_master_last_build_kind', { kind: 'unchanged' }), 1)
    assert.ok((sample(s, 'snapshot_master_store_bytes') ?? 0) > 0)
    assert.equal(statSync(prom).mode & 0o777, 0o644, 'node_exporter must be able to read it')
    assert.deepEqual(readFileSync(prom, 'utf8').split('\n').filter((l) => l.includes('.tmp')), [])

    // A build that fails (its source is gone) is counted by its exit code; the last success stays.
    const before = sample(s, 'snapshot_master_last_build_timestamp_seconds')
    const failed = await runCli(['build', '--source', join(dir, 'gone'), '--store', store, '--metrics-file', prom])
    assert.notEqual(failed.code, 0)
    const s2 = parseExposition(readFileSync(prom, 'utf8'))
    assert.equal(sample(s2, 'snapshot_master_last_build_exit_code'), failed.code)
    assert.equal(sample(s2, 'snapshot_master_builds_total', { result: failed.code === 2 ? 'usage' : 'failure' }), 1)
    assert.equal(sample(s2, 'snapshot_master_builds_total', { result: 'full' }), 1)
    assert.equal(sample(s2, 'snapshot_master_last_build_timestamp_seconds'), before)

    const pruneProm = join(dir, 'textfile', 'prune.prom')
    await runJson(['prune', '--store', store, '--keep', '1', '--grace', '0', '--metrics-file', pruneProm])
    const p = parseExposition(readFileSync(pruneProm, 'utf8'))
    assert.equal(sample(p, 'snapshot_master_prunes_total', { result: 'ok' }), 1)
    // Its own series only: node_exporter refuses one that two files carry, and "never built" would page someone.
    assert.deepEqual(p.filter((x) => !x.name.includes('prune')), [])
    assert.equal(s.filter((x) => x.name.includes('prune')).length, 0, 'a build without --keep does not prune')
    assert.ok((sample(p, 'snapshot_master_last_prune_timestamp_seconds') ?? 0) > 0)
  })

  test('a one-shot pull writes its file: a swap, then a refused pull (exit 3) that changes nothing live', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'snapshot-metrics-pull-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const src = join(dir, 'src')
    const store = join(dir, 'store')
    const prom = join(dir, 'replica.prom')
    writeTree(src, { 'a/1.m3u': 'one\n', 'a/2.m3u': 'two\n' })
    await runJson(['keygen', '--out', join(dir, 'keys')])
    await runJson(['keygen', '--out', join(dir, 'foreign')])
    await runJson(['build', '--source', src, '--store', store, '--key', join(dir, 'keys/snapshot.key')])
    const pull = (pub: string) => runCli(['pull', '--from', store, '--target', join(dir, 'replica'), '--pubkey', pub, '--swap', '--metrics-file', prom])
    assert.equal((await pull(join(dir, 'keys/snapshot.pub'))).code, 0)
    const ok = parseExposition(readFileSync(prom, 'utf8'))
    assert.equal(sample(ok, 'snapshot_replica_live_id'), 1)
    // The live tree, and the second one a new replica fills after its first swap (README, --trees).
    assert.equal(sample(ok, 'snapshot_replica_trees_on_disk'), 2)
    const refused = await pull(join(dir, 'foreign/snapshot.pub'))
    assert.equal(refused.code, 3, refused.stderr)
    const s = parseExposition(readFileSync(prom, 'utf8'))
    assert.equal(sample(s, 'snapshot_replica_pulls_total', { result: 'swapped' }), 1)
    assert.equal(sample(s, 'snapshot_replica_pulls_total', { result: 'verify_failed' }), 1)
    assert.equal(sample(s, 'snapshot_replica_refusals_total', { reason: 'ERR_SIGNATURE' }), 1)
    assert.equal(sample(s, 'snapshot_replica_last_pull_exit_code'), 3)
    assert.equal(sample(s, 'snapshot_replica_last_success_timestamp_seconds'), sample(ok, 'snapshot_replica_last_success_timestamp_seconds'))
    assert.equal(sample(s, 'snapshot_replica_live_id'), 1)
    assert.equal(sample(s, 'snapshot_replica_behind_seconds'), 0)
  })

  test('build --cron --metrics-listen serves /metrics after its first build, and no /status', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'snapshot-metrics-buildcron-'))
    const src = join(dir, 'src')
    writeTree(src, { 'a.m3u': 'a\n' })
    const p = await startMetricsProcess(['build', '--source', src, '--store', join(dir, 'store'), '--cron', '0 0 1 1 *'])
    t.after(async () => {
      await p.stop()
      rmSync(dir, { recursive: true, force: true })
    })
    const s = await eventually('the first build in /metrics', async () => {
      const samples = parseExposition((await getText(`${p.url}/metrics`)).body)
      return sample(samples, 'snapshot_master_builds_total', { result: 'full' }) === 1 ? samples : undefined
    })
    assert.equal(sample(s, 'snapshot_master_latest_id'), 1)
    assert.equal(sample(s, 'snapshot_master_last_build_exit_code'), 0)
    assert.equal((await getText(`${p.url}/status`)).status, 404)
    assert.equal(await p.stop(), 0)
  })

  test('--metrics-listen on a one-shot run is a usage error (exit 2)', async () => {
    const r = await runCli(['pull', '--from', '/nonexistent', '--target', join(tmpdir(), 'nowhere-metrics'), '--metrics-listen', ':0'])
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, /--metrics-listen needs a process that keeps running/)
    const bad = await runCli(['serve', '--store', tmpdir(), '--metrics-listen', 'nonsense'])
    assert.equal(bad.code, 2, bad.stderr)
  })

  test('serve --metrics-listen counts requests and bytes by status', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'snapshot-metrics-serve-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const src = join(dir, 'src')
    const store = join(dir, 'store')
    writeTree(src, { 'a.m3u': 'a\n' })
    await runJson(['build', '--source', src, '--store', store])
    const { freePort } = await import('./helpers/metrics-processes.js')
    const port = await freePort()
    const server = await startServe(store, ['--metrics-listen', `127.0.0.1:${port}`])
    t.after(() => server.stop())
    const latest = await getText(`${server.url}/latest.json`)
    assert.equal(latest.status, 200)
    assert.equal((await getText(`${server.url}/nope.json`)).status, 404)
    assert.equal((await getText(`${server.url}/.state/x`)).status, 404)
    const metrics = await getText(`http://127.0.0.1:${port}/metrics`)
    assert.match(metrics.type ?? '', /^text\/plain; version=0\.0\.4/)
    const s = parseExposition(metrics.body)
    assert.equal(sample(s, 'snapshot_serve_requests_total', { code: '200' }), 1)
    assert.equal(sample(s, 'snapshot_serve_requests_total', { code: '404' }), 2)
    const bytes = sample(s, 'snapshot_serve_response_bytes_total', { code: '200' }) ?? 0
    assert.ok(bytes > Buffer.byteLength(latest.body) && bytes < Buffer.byteLength(latest.body) + 1024, `${bytes} bytes: the body plus its headers`)
    assert.ok(sample(s, 'process_start_time_seconds') !== undefined, 'a long-running process also reports process_* metrics')
    assert.equal((await getText(`http://127.0.0.1:${port}/status`)).status, 404, 'serve has no replica status')
  })
})
