/**
 * A small run of the WAN benchmark with relays (`wan-bench --relays`, scripts/wan-relays.ts), so
 * that the continents, the relays (`snapshot mirror --watch` served by `snapshot serve`) and the
 * replicas' failover cannot rot: two continents of three replicas, a warm-up hour and one hour
 * without relays, one with, one with a relay killed as the build starts. Every replica must equal the master, each
 * continent's ocean link must carry less with a relay than without (bytes, not time), and the
 * namespaces must be gone afterwards. Needs root (CI runs as root).
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { RelayBenchResult } from '../scripts/wan-relays.js'

const script = resolve(dirname(fileURLToPath(import.meta.url)), '../scripts/wan-bench.js')

test('relays: three replicas per continent behind a relay; the origin sends less per continent, and a dead relay costs a failover', { timeout: 400_000 }, async (t) => {
  if (process.getuid?.() !== 0) throw new Error('the WAN test makes network namespaces: run it as root (CI does)')
  for (const tool of ['ip', 'tc']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' })
    } catch {
      throw new Error(`${tool} is missing: run scripts/test-deps.sh (as root) to install it`)
    }
  }
  const work = mkdtempSync(join(tmpdir(), 'snapshot-wan-relays-test-'))
  t.after(() => rmSync(work, { recursive: true, force: true }))
  const args = ['--relays', '--files', '1000', '--continents', '2', '--per-continent', '3', '--rounds', '1', '--json', '--work', join(work, 'run'), '--phase-timeout', '180']
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done, fail) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGTERM') // the script removes its namespaces on SIGTERM
      fail(new Error(`the relay bench did not finish within 360 s:\n${stderr}`))
    }, 360_000)
    child.once('error', fail)
    child.once('close', (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })
  assert.equal(r.code, 0, r.stderr)
  const result = JSON.parse(r.stdout) as RelayBenchResult
  for (const p of result.phases) t.diagnostic(`${p.phase} (${p.relays ? 'relays' : 'no relays'}): ${p.allSeconds.toFixed(2)} s to all swapped; origin egress ${p.originEgress} bytes (${p.egressByContinent.join(', ')})${p.note ? `; ${p.note}` : ''}`)
  assert.deepEqual(result.phases.map((p) => [p.phase, p.relays]), [['first full', false], ['hour 1', false], ['hour 2', false], ['hour 3', true], ['hour 4', true]])
  for (const p of result.phases) assert.equal(p.replicaSeconds.length, 6)
  assert.deepEqual(result.verified.filter((v) => v.difference !== null), [])
  const [, , without, withRelays] = result.phases
  for (let c = 0; c < 2; c++) {
    assert.ok(withRelays!.egressByContinent[c]! < without!.egressByContinent[c]!, `continent ${c + 1}: ${withRelays!.egressByContinent[c]} bytes with a relay, ${without!.egressByContinent[c]} without`)
  }
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  assert.ok(!ns.includes(`${result.prefix}-`), ns)
})
