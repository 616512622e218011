import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { hasGnuFind } from '../src/fs/tree-scan.js'
import { runCli, runJson } from './helpers/cli.js'
import { treeDiff } from './helpers/tree.js'

/**
 * Issue 19, case 1: a tree that changes while it is scanned. A writer creates, deletes and renames
 * about 50 entries a second (directories with files in them appear and vanish, files are written
 * to a temp name and renamed, as editors and generators do) during 10 builds of a 5,000-file tree,
 * 7 scanned by GNU find and 3 by the portable walk. On main, find's "No such file or directory"
 * failed 2 of 10 such builds. Here every build publishes, the store verifies, and once the churn
 * stops, a replica equals the source.
 */

const FILES = 5000
const BUILDS = 10
const NODE_WALK_BUILDS = new Set([3, 6, 9])
const TICK_MS = 20 // one change each: ~50 a second
const MAX_TICKS = 6000 // bounds the writer whatever happens (two minutes' worth)

interface Built {
  id: number
  created: boolean
  skipped: { count: number; byReason: Record<string, number> }
  warnings: string[]
}

test('10 builds under churn of ~50 entries a second all publish; the store verifies; a replica equals the source', { timeout: 300_000 }, async (t) => {
  assert.ok(hasGnuFind(), 'GNU find is needed for this test: run scripts/test-deps.sh')
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-churn-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const source = join(dir, 'source')
  const store = join(dir, 'store')
  for (let i = 0; i < FILES; i++) {
    const d = join(source, `g${i % 50}`, `h${i % 7}`)
    if (i < 350) mkdirSync(d, { recursive: true })
    writeFileSync(join(d, `p${i}.m3u`), `#EXTM3U\n#EXTINF:${i},Artist ${i}\nhttp://example.invalid/${i}.mp3\n`)
  }
  await runJson(['build', '--source', source, '--store', store])

  // The writer: one change per tick, cycling through the kinds an operator's tree sees.
  let stop = false
  let ticks = 0
  let n = 0
  const live: string[] = [] // churn directories that exist
  const started = Date.now()
  const change = (): void => {
      n++
      try {
        switch (n % 4) {
          case 0: {
            const d = join(source, `g${n % 50}`, `tmpdir${n}`)
            mkdirSync(d)
            for (let k = 0; k < 3; k++) writeFileSync(join(d, `f${k}.m3u`), `${n} ${k}\n`)
            live.push(d)
            break
          }
          case 1: {
            const d = live.shift()
            if (d) rmSync(d, { recursive: true, force: true })
            break
          }
          case 2: {
            // An editor's save: a temp file written, then renamed over the real name.
            const f = join(source, `g${n % 50}`, `h${n % 7}`, `p${(n * 7) % FILES}.m3u`)
            writeFileSync(`${f}.swp`, `saved ${n}\n`)
            renameSync(`${f}.swp`, f)
            break
          }
          case 3: {
            // A file renamed to a new name (the old one vanishes).
            const g = join(source, `g${n % 50}`)
            const name = readdirSync(g).find((x) => x.startsWith('moved'))
            if (name) renameSync(join(g, name), join(g, `moved${n}.m3u`))
            else writeFileSync(join(g, `moved${n}.m3u`), `${n}\n`)
            break
          }
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
  }
  // Paced by the wall clock, not by timers alone: a busy machine delays a timer, and the writer
  // then catches up, so the rate stays ~50 changes a second.
  const writer = (async () => {
    while (!stop && ticks < MAX_TICKS) {
      while (ticks < Math.min(MAX_TICKS, (Date.now() - started) / TICK_MS)) {
        ticks++
        change()
      }
      await new Promise((r) => setTimeout(r, TICK_MS))
    }
  })()

  const results: { code: number; built?: Built; stderr: string }[] = []
  try {
    for (let b = 0; b < BUILDS; b++) {
      const env = NODE_WALK_BUILDS.has(b) ? { SNAPSHOT_SCAN: 'node' } : {}
      const r = await runCli(['build', '--source', source, '--store', store, '--json', '--quiet'], { env })
      results.push({ code: r.code, stderr: r.stderr, ...(r.code === 0 ? { built: JSON.parse(r.stdout) as Built } : {}) })
    }
  } finally {
    stop = true
    await writer
  }
  const rate = ticks / ((Date.now() - started) / 1000)
  const published = results.filter((r) => r.code === 0 && r.built?.created)
  const vanished = results.reduce((sum, r) => sum + (r.built?.skipped.byReason.vanished ?? 0), 0)
  t.diagnostic(`${published.length} of ${BUILDS} builds published under churn (${ticks} changes, ${rate.toFixed(0)} a second); ${vanished} entries vanished mid-build, skipped with a warning`)
  for (const r of results) assert.equal(r.code, 0, r.stderr)
  assert.equal(published.length, BUILDS)
  for (const r of results) {
    // One warning each, and counted: what vanished is named.
    const named = r.built!.warnings.filter((w) => / vanished during the scan | changed during the build /.test(w)).length
    assert.equal(named, (r.built!.skipped.byReason.vanished ?? 0) + (r.built!.skipped.byReason.changing ?? 0))
  }

  // Every snapshot the builds published verifies: every object present, exact, hashing to its name.
  const v = await runCli(['verify', '--store', store, '--json'])
  assert.equal(v.code, 0, v.stdout + v.stderr)

  // The churn has stopped: one more build, and a replica pulled from the store equals the source.
  const last = await runJson<Built>(['build', '--source', source, '--store', store])
  assert.equal(last.skipped.count, 0)
  const replica = join(dir, 'replica')
  await runJson(['pull', '--from', store, '--target', replica, '--swap'])
  assert.deepEqual(treeDiff(source, replica), [])
})
