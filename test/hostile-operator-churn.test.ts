import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { hasGnuFind, scanTree } from '../src/fs/tree-scan.js'
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
  const vanished = results.reduce((sum, r) => sum + (r.built?.skipped?.byReason.vanished ?? 0), 0)
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

/**
 * The same race, made certain: a shell loop creates and removes directories as fast as it can
 * while the scan runs again and again, until each walk (find's and the portable one) has met an
 * entry that vanished. On main the first such scan threw.
 */
test('scanTree reports entries that vanish mid-walk and completes, with find and with the portable walk', { timeout: 120_000 }, async (t) => {
  assert.ok(hasGnuFind(), 'GNU find is needed for this test: run scripts/test-deps.sh')
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-vanish-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  for (let i = 0; i < 400; i++) {
    mkdirSync(join(dir, `s${i % 20}`), { recursive: true })
    writeFileSync(join(dir, `s${i % 20}`, `f${i}`), 'x')
  }
  // Another process, so that it races the portable walk too (which runs in this one, synchronously).
  // Bounded in count (200,000 rounds) and time (killed when the scans are done).
  const round = "const d='c/d'+i;fs.mkdirSync(d+'/e',{recursive:true});fs.writeFileSync(d+'/e/f','');fs.writeFileSync(d+'/g','');fs.rmSync(d,{recursive:true})"
  const churn = spawn(process.execPath, ['-e', `const fs=require('fs');for(let i=0;i<200000;i++){${round}}`], { cwd: dir, stdio: 'ignore' })
  const churnDone = once(churn, 'exit')
  const saw: Record<string, number> = {}
  const previous = process.env.SNAPSHOT_SCAN
  try {
    for (const method of ['find', 'node']) {
      process.env.SNAPSHOT_SCAN = method
      saw[method] = 0
      const deadline = Date.now() + 20_000
      for (let scans = 0; saw[method] === 0 && scans < 2000 && Date.now() < deadline; scans++) {
        let records = 0
        await scanTree(dir, () => void records++, (path, why) => {
          assert.match(path, /^c(\/|$)/, `only the churned subtree vanishes, not ${path}`)
          assert.match(why, /No such file or directory|Not a directory/)
          saw[method]!++
        })
        assert.ok(records >= 420, `a scan met only ${records} records`) // the 400 files and 20 directories stand
      }
    }
  } finally {
    if (previous === undefined) delete process.env.SNAPSHOT_SCAN
    else process.env.SNAPSHOT_SCAN = previous
    churn.kill('SIGKILL')
    await churnDone
  }
  t.diagnostic(`vanished entries met: find ${saw.find}, portable walk ${saw.node}`)
  assert.ok(saw.find! > 0 && saw.node! > 0, `the churn never raced a scan: ${JSON.stringify(saw)}`)
})
