import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { treeDiff } from './helpers/tree.js'

/**
 * Issue 19, case 2: a file of 4 GiB or more stopped every build (ERR_STREAM_PREMATURE_CLOSE,
 * naming no file): files were read whole into one Buffer, and a 200 MB one peaked a build at
 * 660 MB. Here a 5 GiB sparse file and a 24 MiB one of random bytes build (a full, then a delta
 * that rewrites the 24 MiB one) with each build's peak RSS under 256 MiB, as getrusage reports it
 * in the build process itself, and a replica pulls them.
 */

const RSS_CLI = resolve(dirname(fileURLToPath(import.meta.url)), 'helpers/rss-cli.js')
const GiB = 1024 ** 3
const MAX_RSS_KIB = 256 * 1024

function runMeasured(args: string[]): Promise<{ code: number; stdout: string; stderr: string; rssKiB: number }> {
  return new Promise((done, reject) => {
    const child = spawn(process.execPath, [RSS_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 900_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      const m = /peak-rss-kib (\d+)/.exec(stderr)
      done({ code: code ?? -1, stdout, stderr, rssKiB: m ? Number(m[1]) : NaN })
    })
  })
}

/** The first and last MiB of a file, read back: zeros where the sparse file had its holes. */
function edgesAreZero(file: string, size: number): boolean {
  const fd = openSync(file, 'r')
  try {
    const buf = Buffer.alloc(1 << 20)
    for (const at of [0, size - buf.length]) {
      if (readSync(fd, buf, 0, buf.length, at) !== buf.length || buf.some((b) => b !== 0)) return false
    }
    return true
  } finally {
    closeSync(fd)
  }
}

test('a 5 GiB sparse file builds and pulls, each build under 256 MiB of RSS', { timeout: 1_800_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-large-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const source = join(dir, 'source')
  const store = join(dir, 'store')
  mkdirSync(join(source, 'huge'), { recursive: true })
  mkdirSync(join(source, 'small'), { recursive: true })
  writeFileSync(join(source, 'small', 'a.m3u'), '#EXTM3U\n')
  writeFileSync(join(source, 'small', 'random.bin'), randomBytes(24 << 20))
  const huge = join(source, 'huge', 'zeros.bin')
  writeFileSync(huge, '')
  truncateSync(huge, 5 * GiB) // what `truncate -s 5G` makes: a hole, no blocks

  const full = await runMeasured(['build', '--source', source, '--store', store, '--json'])
  assert.equal(full.code, 0, full.stderr)
  const built = JSON.parse(full.stdout) as { kind: string; files: number; bytes: number }
  assert.equal(built.kind, 'full')
  assert.equal(built.bytes, 5 * GiB + (24 << 20) + 8)

  writeFileSync(join(source, 'small', 'random.bin'), randomBytes(24 << 20)) // the delta streams it too
  const delta = await runMeasured(['build', '--source', source, '--store', store, '--json'])
  assert.equal(delta.code, 0, delta.stderr)
  assert.equal((JSON.parse(delta.stdout) as { kind: string; changed: number }).changed, 1)

  const replica = join(dir, 'replica')
  const pulled = await runMeasured(['pull', '--from', store, '--target', replica, '--swap', '--json'])
  t.diagnostic(`peak RSS: full build ${(full.rssKiB / 1024).toFixed(0)} MiB, delta build ${(delta.rssKiB / 1024).toFixed(0)} MiB, pull ${(pulled.rssKiB / 1024).toFixed(0)} MiB`)
  assert.equal(pulled.code, 0, pulled.stderr)
  assert.ok(full.rssKiB < MAX_RSS_KIB, `the full build peaked at ${full.rssKiB} KiB`)
  assert.ok(delta.rssKiB < MAX_RSS_KIB, `the delta build peaked at ${delta.rssKiB} KiB`)
  // The pull checked the full archive's bytes against the signed tree digest, which hashes the
  // 5 GiB file's content: its size and edges here, and the rest of the tree byte for byte.
  const replicaHuge = join(replica, 'huge', 'zeros.bin')
  assert.equal(statSync(replicaHuge).size, 5 * GiB)
  assert.ok(edgesAreZero(replicaHuge, 5 * GiB))
  assert.deepEqual(treeDiff(join(source, 'small'), join(replica, 'small')), [])
})
