import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { runJson, startServe } from './helpers/cli.js'
import { eventually, freePort, getText, requireTool, startExternal, startMetricsProcess } from './helpers/metrics-processes.js'
import { writeTree } from './helpers/tree.js'

/**
 * The metrics as an operator collects them: a real Prometheus scrapes a replica's `pull --cron
 * --metrics-listen` endpoint, and the master's one-shot `build --metrics-file` through
 * node_exporter's textfile collector; the values are read back through Prometheus' HTTP API, after
 * a pull and after a pull refused because the store's new snapshot is signed by a foreign key.
 */
test('Prometheus scrapes a replica and a master textfile, and sees a pull, then a refused pull', { timeout: 180_000 }, async (t) => {
  requireTool('prometheus')
  requireTool('prometheus-node-exporter')
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-prometheus-'))
  const stops: (() => Promise<unknown>)[] = []
  t.after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
  })
  const src = join(dir, 'src')
  const store = join(dir, 'store')
  const textfiles = join(dir, 'textfile')
  mkdirSync(textfiles)
  writeTree(src, Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`d${i % 3}/p${i}.m3u`, `#EXTM3U\n${i}\n`])))
  await runJson(['keygen', '--out', join(dir, 'keys')])
  await runJson(['keygen', '--out', join(dir, 'foreign')])
  const build = (key: string) => runJson(['build', '--source', src, '--store', store, '--key', key, '--metrics-file', join(textfiles, 'snapshot-build.prom')])
  await build(join(dir, 'keys/snapshot.key'))

  const serve = await startServe(store)
  stops.push(() => serve.stop())
  const replica = await startMetricsProcess(['pull', '--from', serve.url, '--target', join(dir, 'replica'), '--pubkey', join(dir, 'keys/snapshot.pub'), '--swap', '--cron', '*/2 * * * * *'])
  stops.push(() => replica.stop())

  const nodePort = await freePort()
  const node = startExternal('prometheus-node-exporter', [`--web.listen-address=127.0.0.1:${nodePort}`, '--collector.disable-defaults', '--collector.textfile', `--collector.textfile.directory=${textfiles}`])
  stops.push(() => node.stop())
  const promPort = await freePort()
  const replicaTarget = new URL(replica.url).host
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: snapshot-replica',
      `    static_configs: [{ targets: ['${replicaTarget}'] }]`,
      '  - job_name: node',
      `    static_configs: [{ targets: ['127.0.0.1:${nodePort}'] }]`,
      '',
    ].join('\n'),
  )
  const prometheus = startExternal('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`])
  stops.push(() => prometheus.stop())
  const api = `http://127.0.0.1:${promPort}`
  await eventually('Prometheus to be ready', async () => ((await getText(`${api}/-/ready`)).status === 200 ? true : undefined), 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${prometheus.output()}`)
  })

  /** The value of a one-series query, once Prometheus has one that satisfies `ok`. */
  const query = async (q: string, ok: (v: number) => boolean): Promise<number> =>
    eventually(
      `${q} in Prometheus`,
      async () => {
        const r = await getText(`${api}/api/v1/query?query=${encodeURIComponent(q)}`)
        const body = JSON.parse(r.body) as { status: string; data: { result: { value: [number, string] }[] } }
        assert.equal(body.status, 'success', r.body)
        const v = body.data.result.length === 1 ? Number(body.data.result[0]!.value[1]) : undefined
        return v !== undefined && ok(v) ? v : undefined
      },
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\nreplica:\n${replica.stderr()}\nnode_exporter:\n${node.output().slice(-2000)}`)
    })

  // After the first pull: the replica serves snapshot 1, up to date; the master's build is in the textfile.
  assert.equal(await query('up{job="snapshot-replica"}', (v) => v === 1), 1)
  assert.equal(await query('snapshot_replica_live_id{job="snapshot-replica"}', (v) => v === 1), 1)
  assert.equal(await query('snapshot_replica_last_pull_exit_code{job="snapshot-replica"}', (v) => v === 0), 0)
  assert.equal(await query('snapshot_replica_behind_seconds{job="snapshot-replica"}', () => true), 0)
  assert.equal(await query('snapshot_replica_swaps_total{job="snapshot-replica"}', (v) => v >= 1), 1)
  assert.ok((await query('snapshot_replica_entries_written_total{job="snapshot-replica"}', (v) => v > 0)) >= 30)
  assert.equal(await query('snapshot_replica_pinned{job="snapshot-replica"}', () => true), 0)
  assert.equal(await query('snapshot_master_latest_id{job="node"}', (v) => v === 1), 1)
  assert.equal(await query('snapshot_master_builds_total{job="node",result="full"}', (v) => v === 1), 1)
  assert.ok((await query('snapshot_master_store_bytes{job="node"}', (v) => v > 0)) > 0)

  // The master publishes snapshot 2 signed by a key the replica does not trust: each pull is refused (exit 3).
  writeFileSync(join(src, 'd0/p0.m3u'), '#EXTM3U\nchanged\n')
  await build(join(dir, 'foreign/snapshot.key'))
  assert.equal(await query('snapshot_master_latest_id{job="node"}', (v) => v === 2), 2)
  assert.equal(await query('snapshot_master_builds_total{job="node",result="delta"}', (v) => v === 1), 1)
  assert.equal(await query('snapshot_replica_last_pull_exit_code{job="snapshot-replica"}', (v) => v !== 0), 3)
  assert.ok((await query('snapshot_replica_refusals_total{job="snapshot-replica",reason="ERR_SIGNATURE"}', (v) => v >= 1)) >= 1)
  assert.ok((await query('snapshot_replica_pulls_total{job="snapshot-replica",result="verify_failed"}', (v) => v >= 1)) >= 1)
  // Nothing live changed, and the replica still counts one swap.
  assert.equal(await query('snapshot_replica_live_id{job="snapshot-replica"}', () => true), 1)
  assert.equal(await query('snapshot_replica_swaps_total{job="snapshot-replica"}', () => true), 1)
  const status = JSON.parse((await getText(`${replica.url}/status`)).body) as { live: { id: number }; lastOutcome: { exitCode: number; code: string } }
  assert.equal(status.live.id, 1)
  assert.deepEqual([status.lastOutcome.exitCode, status.lastOutcome.code], [3, 'ERR_SIGNATURE'])
  assert.equal(await replica.stop(), 0, replica.stderr())
})
