/**
 * A small run of the WAN benchmark (scripts/wan-bench.ts), so that the namespaces, the shaped
 * links, the latency proxy and `pull --watch` across them cannot rot: two replicas in network
 * namespaces of their own, a few thousand files, one hour of change; both replicas must equal the
 * master after their watch swapped it, and the namespaces must be gone afterwards, also when the
 * run is stopped midway. Needs root (CI runs as root).
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { WanResult } from '../scripts/wan-bench.js'
import { treeDiff } from './helpers/tree.js'

const script = resolve(dirname(fileURLToPath(import.meta.url)), '../scripts/wan-bench.js')

function requireTools(): void {
  if (process.getuid?.() !== 0) throw new Error('the WAN test makes network namespaces: run it as root (CI does)')
  for (const tool of ['ip', 'tc', 'rsync']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' })
    } catch {
      throw new Error(`${tool} is missing: run scripts/test-deps.sh (as root) to install it`)
    }
  }
}

function namespaces(prefix: string): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${prefix}-`))
}

/** Runs the bench script; resolves with its exit code, stdout, and the namespace prefix it announced. */
function runBench(args: string[], timeoutMs: number, onPrefix?: (prefix: string, child: ReturnType<typeof spawn>) => void): Promise<{ code: number | null; stdout: string; stderr: string; prefix: string | null }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let prefix: string | null = null
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    createInterface({ input: child.stderr }).on('line', (l) => {
      stderr += `${l}\n`
      const m = /namespaces (wb[a-z2-7]+)-\*/.exec(l)
      if (m && prefix === null) {
        prefix = m[1]!
        onPrefix?.(prefix, child)
      }
    })
    const timer = setTimeout(() => {
      child.kill('SIGTERM') // the script removes its namespaces on SIGTERM
      reject(new Error(`the WAN bench did not finish within ${timeoutMs / 1000} s:\n${stderr}`))
    }, timeoutMs)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolvePromise({ code, stdout, stderr, prefix })
    })
  })
}

test('two replicas in their own namespaces, over 160 ms / 100 Mbit/s links, equal the master after their watch swapped each snapshot', { timeout: 400_000 }, async (t) => {
  requireTools()
  const work = mkdtempSync(join(tmpdir(), 'snapshot-wan-test-'))
  t.after(() => rmSync(work, { recursive: true, force: true }))
  const r = await runBench(['--files', '3000', '--replicas', '2', '--hours', '1', '--json', '--keep', '--work', join(work, 'run'), '--phase-timeout', '180'], 360_000)
  assert.equal(r.code, 0, r.stderr)
  const result = JSON.parse(r.stdout) as WanResult
  assert.equal(result.replicas, 2)
  assert.deepEqual(result.phases.map((p) => p.phase), ['first full', 'hour 1'])
  for (const phase of result.phases) {
    assert.equal(phase.replicas.length, 2)
    for (const rep of phase.replicas) {
      assert.ok(rep.bytesDown > 0, `${phase.phase}: replica ${rep.replica} received bytes over its link`)
      // The pointer's check, the pull's pointer, manifest(s) and archive(s), the next check: a handful, not a loop.
      assert.ok(rep.requests >= 3 && rep.requests <= 15, `${phase.phase}: replica ${rep.replica} made ${rep.requests} requests`)
    }
    assert.ok(phase.rsync !== null && phase.rsync.replicas.every((x) => x.bytesDown > 0), 'rsync ran over the same links')
  }
  assert.deepEqual(result.verified, [
    { replica: 1, ours: null, rsync: null },
    { replica: 2, ours: null, rsync: null },
  ])
  // Our own look at the trees, on top of the script's: bytes, modes and types.
  const master = join(result.work, 'master/tree')
  for (const i of [1, 2]) {
    assert.deepEqual(treeDiff(master, join(result.work, `replica-${i}/live`)), [], `replica ${i} (ours)`)
    assert.deepEqual(treeDiff(master, join(result.work, `replica-${i}/rsync`)), [], `replica ${i} (rsync)`)
  }
  assert.deepEqual(namespaces(result.prefix), [], 'the namespaces are gone')
})

test('a WAN run stopped midway removes its namespaces', { timeout: 120_000 }, async (t) => {
  requireTools()
  const work = mkdtempSync(join(tmpdir(), 'snapshot-wan-test-'))
  t.after(() => rmSync(work, { recursive: true, force: true }))
  let seen: string[] = []
  const r = await runBench(['--files', '500', '--replicas', '2', '--hours', '3', '--work', join(work, 'run')], 100_000, (prefix, child) => {
    seen = namespaces(prefix)
    child.kill('SIGTERM')
  })
  assert.ok(r.prefix !== null, r.stderr)
  assert.equal(seen.length, 3, `the run had made its namespaces (${seen.join(', ')})`)
  assert.notEqual(r.code, 0)
  assert.deepEqual(namespaces(r.prefix!), [], 'the namespaces are gone after SIGTERM')
})
