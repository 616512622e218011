import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { readTrustedKeys } from '../src/cli/keys.js'
import { openSource } from '../src/store/open-source.js'
import { StoreClient } from '../src/store/store-client.js'
import { pull } from '../src/replica/pull.js'
import { BIN, runCli, runJson, startServe } from './helpers/cli.js'
import { describeTree, treeDiff } from './helpers/tree.js'

/**
 * SIGKILL at exact steps of `snapshot build` and `snapshot pull --swap` (src/fs/crash-points.ts:
 * SNAPSHOT_CRASH_AT=NAME#N kills the process the N-th time it reaches that point). After every
 * kill the store must verify and the live tree must be one whole snapshot, old or new; then the
 * next run must complete. A point the run never reaches exits normally and counts as "not hit".
 */

interface Outcome {
  code: number | null
  signal: NodeJS.Signals | null
  stderr: string
}

/** Runs the CLI with a crash point armed; resolves with how it ended (exit code or signal). */
function runWithCrash(args: string[], crashAt: string, timeoutMs = 60_000): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, SNAPSHOT_CRASH_AT: crashAt }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`snapshot ${args.join(' ')} (crash at ${crashAt}) timed out\n${stderr}`))
    }, timeoutMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stderr })
    })
  })
}

/** Killed at the point, or (not reached) a normal success: anything else is a failure. */
function killedOrDone(point: string, r: Outcome): boolean {
  if (r.signal === 'SIGKILL') return true
  assert.equal(r.code, 0, `${point}: neither killed nor successful (exit ${r.code}, signal ${r.signal})\n${r.stderr}`)
  return false
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/**
 * A SIGKILL loses nothing the kernel already holds, whatever the filesystem, so these runs live in
 * tmpfs when there is a roomy one: the fsyncs they make then cost nothing on a slow shared disk.
 */
const SCRATCH = freeBytes('/dev/shm') > 1 << 30 ? '/dev/shm' : tmpdir()

function freeBytes(path: string): number {
  try {
    const st = statfsSync(path)
    return st.bavail * st.bsize
  } catch {
    return 0
  }
}

/** A small playlist tree: `files` text files in 40 directories, two links, one binary blob. */
function makeSource(root: string, files: number): void {
  for (let i = 0; i < files; i++) {
    const dir = join(root, `g${String(i % 40).padStart(2, '0')}`)
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, `p${i}.m3u`), `#EXTM3U\n#EXTINF:${i},Artist ${i}\nhttp://example.invalid/${'x'.repeat(80 + (i % 150))}/${i}.mp3\n`)
  }
  mkdirSync(join(root, 'links'))
  symlinkSync('../g00/p0.m3u', join(root, 'links/first'))
  symlinkSync('../g01', join(root, 'links/dir'))
  mkdirSync(join(root, 'bin'))
  writeFileSync(join(root, 'bin/blob.bin'), randomBytes(300_000)) // incompressible: objects span several chunks
}

/** One hour of edits: a few rewrites, a deletion, an addition, and a new blob. */
function mutate(root: string, files: number, round: number): void {
  for (let k = 0; k < 3; k++) {
    const i = (round * 37 + k * 11) % files
    const file = join(root, `g${String(i % 40).padStart(2, '0')}`, `p${i}.m3u`)
    if (existsSync(file)) writeFileSync(file, `#EXTM3U\nround ${round} edit ${k}\n`)
  }
  const gone = join(root, `g${String((round * 13) % 40).padStart(2, '0')}`, `p${(round * 13) % files}.m3u`)
  if (existsSync(gone)) unlinkSync(gone)
  mkdirSync(join(root, 'added'), { recursive: true })
  writeFileSync(join(root, 'added', `r${round}.m3u`), `#EXTM3U\nadded in round ${round}\n`)
  writeFileSync(join(root, 'bin/blob.bin'), randomBytes(200_000))
}

// The two halves share nothing, so they run side by side; each runs its own kills in sequence.
describe('crash safety', { concurrency: 2 }, () => {
  describe('snapshot build killed at every step', { concurrency: 1 }, () => {
    const FILES = 1100 // past 1000 records, so the scan reaches its crash point
    let dir: string
    let keys: string
    /** Two independent masters (source, store, replica) share the points, so their kills overlap. */
    let lanes: { source: string; store: string; replica: string }[]

    before(async () => {
      dir = mkdtempSync(join(SCRATCH, 'snapshot-crash-build-'))
      keys = join(dir, 'keys')
      await runJson(['keygen', '--out', keys])
      lanes = [0, 1].map((n) => ({ source: join(dir, `master-${n}`), store: join(dir, `store-${n}`), replica: join(dir, `replica-${n}`) }))
      await Promise.all(
        lanes.map(async (lane) => {
          makeSource(lane.source, FILES)
          await runJson(['build', '--source', lane.source, '--store', lane.store, '--key', join(keys, 'snapshot.key')])
        }),
      )
    })
    after(() => rmSync(dir, { recursive: true, force: true }))

    const buildArgs = (lane: { source: string; store: string }, ...extra: string[]) => ['build', '--source', lane.source, '--store', lane.store, '--key', join(keys, 'snapshot.key'), '--quiet', ...extra]

    /** `verify --store` passes, and no content name holds bytes other than those it names. */
    async function assertStoreValid(store: string, point: string): Promise<number> {
      const v = await runCli(['verify', '--store', store, '--pubkey', join(keys, 'snapshot.pub')])
      assert.equal(v.code, 0, `after a kill at ${point}, verify --store says:\n${v.stdout}${v.stderr}`)
      let temps = 0
      for (const name of readdirSync(join(store, 'objects'))) {
        const m = /^([0-9a-f]{64})\.(tar|manifest)\.zst$/.exec(name)
        if (!m) {
          assert.match(name, /^\..*\.tmp$/, `after a kill at ${point}: unexpected ${name} in objects/`)
          temps++
          continue
        }
        assert.equal(sha256(readFileSync(join(store, 'objects', name))), m[1], `after a kill at ${point}: objects/${name} is partial or wrong`)
      }
      return temps
    }

    test('after a SIGKILL at any of 21 points the store verifies, and the next build and a pull succeed', async (t) => {
      // Every killed build is a --full one over a changed tree: it writes, in order, the delta's
      // archive and manifest, the full's archive and manifest (objects), the index (stream writes
      // 1-5), then the record and the pointer (file writes 1 and 2).
      const points = [
        'scan:records#1',
        'object:chunk#1',
        'object:chunk#2',
        'object:chunk#3',
        'object:chunk#4',
        'object:chunk#5',
        'object:chunk#6',
        'stream:written#1',
        'stream:renamed#1',
        'stream:written#2',
        'stream:renamed#2',
        'stream:written#3',
        'stream:renamed#3',
        'stream:written#4',
        'stream:renamed#4',
        'stream:written#5',
        'stream:renamed#5',
        'file:written#1', // the record
        'file:renamed#1',
        'file:written#2', // the pointer: the commit point
        'file:renamed#2',
      ]
      const hit: string[] = []
      const missed: string[] = []
      let temps = 0
      const trusted = await readTrustedKeys([join(keys, 'snapshot.pub')])
      await Promise.all(
        lanes.map(async (lane, n) => {
          for (let i = n; i < points.length; i += lanes.length) {
            const point = points[i]!
            mutate(lane.source, FILES, i + 1)
            const r = await runWithCrash(buildArgs(lane, '--full'), point)
            ;(killedOrDone(point, r) ? hit : missed).push(point)
            await assertStoreValid(lane.store, point)
            const b = await runCli(buildArgs(lane, '--json'))
            assert.equal(b.code, 0, `the build after a kill at ${point} failed:\n${b.stderr}`)
            // In process, to spare a CLI start per point: the pull itself is not what is tested here.
            await pull({ store: new StoreClient(openSource(lane.store), trusted), target: lane.replica, swap: true })
            assert.deepEqual(treeDiff(lane.source, lane.replica), [], `after a kill at ${point}`)
          }
        }),
      )
      for (const lane of lanes) temps += await assertStoreValid(lane.store, 'the end')
      t.diagnostic(`build kill points: ${points.length} tried, ${hit.length} hit, ${missed.length} not reached (${missed.join(', ') || 'none'}); temp files the kills left for prune: ${temps}`)
      assert.ok(points.length >= 20)
      assert.ok(hit.length >= points.length - 2, `only ${hit.length} of ${points.length} points were reached: ${missed.join(', ')}`)
    })

    test('a first build killed midway leaves no pointer, and the next one publishes', async (t) => {
      const fresh = join(dir, 'store-first')
      let hits = 0
      for (const point of ['object:chunk#2', 'file:written#2']) {
        rmSync(fresh, { recursive: true, force: true })
        const r = await runWithCrash(['build', '--source', lanes[0]!.source, '--store', fresh, '--key', join(keys, 'snapshot.key'), '--quiet'], point)
        if (killedOrDone(point, r)) hits++
        assert.equal(existsSync(join(fresh, 'latest.json')), r.signal !== 'SIGKILL', `${point}: a pointer after a first build died`)
        const b = await runJson<{ id: number; created: boolean }>(['build', '--source', lanes[0]!.source, '--store', fresh, '--key', join(keys, 'snapshot.key')])
        assert.ok(b.created && b.id >= 1)
        const v = await runCli(['verify', '--store', fresh, '--pubkey', join(keys, 'snapshot.pub')])
        assert.equal(v.code, 0, v.stdout + v.stderr)
      }
      t.diagnostic(`first-build kill points: 2 tried, ${hits} hit`)
      assert.equal(hits, 2)
    })
  })

  describe('snapshot pull --swap killed at every step', { concurrency: 1 }, () => {
    const FILES = 600
    const BIG_FILES = 4300 // past 4096 entries, so applying its full reports progress (a crash point) midway
    let dir: string
    let keys: string
    let master: Master
    let big: Master

    /** A source, its store served by `snapshot serve`, and the tree of each snapshot, kept as a copy. */
    interface Master {
      source: string
      store: string
      server: Awaited<ReturnType<typeof startServe>>
      copies: Map<number, { path: string; tree: Map<string, string> }>
      files: number
      round: number
    }

    async function makeMaster(name: string, files: number): Promise<Master> {
      const m: Master = { source: join(dir, `${name}-source`), store: join(dir, `${name}-store`), server: undefined!, copies: new Map(), files, round: 0 }
      makeSource(m.source, files)
      mkdirSync(m.store)
      m.server = await startServe(m.store)
      await build(m)
      return m
    }

    async function build(m: Master): Promise<number> {
      const b = await runJson<{ id: number; created: boolean }>(['build', '--source', m.source, '--store', m.store, '--key', join(keys, 'snapshot.key')])
      assert.ok(b.created)
      const copy = `${m.store}-at-${b.id}`
      const cp = spawnSync('cp', ['-a', m.source, copy])
      assert.equal(cp.status, 0, String(cp.stderr))
      m.copies.set(b.id, { path: copy, tree: describeTree(copy) })
      return b.id
    }

    before(async () => {
      dir = mkdtempSync(join(SCRATCH, 'snapshot-crash-pull-'))
      keys = join(dir, 'keys')
      await runJson(['keygen', '--out', keys])
      master = await makeMaster('small', FILES)
      big = await makeMaster('big', BIG_FILES)
    })
    after(async () => {
      await master?.server.stop()
      await big?.server.stop()
      rmSync(dir, { recursive: true, force: true })
    })

    const pullArgs = (m: Master, target: string) => ['pull', '--from', m.server.url, '--target', target, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--quiet']

    /** What the replica serves: nothing, or exactly the tree of one of the candidate snapshots. */
    function liveSnapshot(m: Master, target: string, candidates: (number | null)[], point: string): number | null {
      if (!existsSync(target)) {
        assert.ok(candidates.includes(null), `after a kill at ${point}: ${target} is gone`)
        return null
      }
      const live = describeTree(target)
      for (const id of candidates) {
        if (id === null) continue
        const want = m.copies.get(id)!.tree
        if (live.size === want.size && [...want].every(([p, v]) => live.get(p) === v)) return id
      }
      const diff = treeDiff(m.copies.get(candidates.at(-1)!)!.path, target)
      assert.fail(`after a kill at ${point}, the live tree is neither snapshot ${candidates.join(' nor ')} (a mix):\n${diff.slice(0, 10).join('\n')}`)
    }

    async function completePull(m: Master, target: string, latest: number, point: string): Promise<void> {
      const r = await runCli(pullArgs(m, target))
      assert.equal(r.code, 0, `the pull after a kill at ${point} failed:\n${r.stderr}`)
      assert.equal(liveSnapshot(m, target, [latest], point), latest)
    }

    test('a first pull killed during download, mid-apply or at the swap leaves no live tree, then completes', async (t) => {
      // One fresh replica killed three times in a row, each time before it ever went live, then a
      // pull that completes: repeated crashes must not pile up into a broken state either.
      const target = join(dir, 'fresh')
      const latest = Math.max(...big.copies.keys())
      let hits = 0
      let halfBuilt = false
      for (const point of ['download:chunk#2', 'pull:apply:progress#1', 'symlink:made']) {
        const r = await runWithCrash(pullArgs(big, target), point)
        if (killedOrDone(point, r)) hits++
        assert.equal(liveSnapshot(big, target, [null, latest], point), r.signal === 'SIGKILL' ? null : latest)
        if (point === 'pull:apply:progress#1') {
          // killed after 4096 of the full's 4300-odd entries: the staging tree really is half-built
          const staging = join(dir, '.fresh.snapshot', 'trees', 'a')
          halfBuilt = existsSync(staging) && describeTree(staging).size < big.copies.get(latest)!.tree.size
        }
      }
      await completePull(big, target, latest, 'three kills')
      t.diagnostic(`first-pull kill points: 3 tried, ${hits} hit; staging tree half-built at the mid-apply kill: ${halfBuilt}`)
      assert.equal(hits, 3)
      assert.ok(halfBuilt, 'the mid-apply kill should find a half-built staging tree')
    })

    test('after a SIGKILL at any of 23 points the live tree is the old snapshot or the new one, and the next pull completes', async (t) => {
      const target = join(dir, 'replica')
      let live = Math.max(...master.copies.keys())
      await completePull(master, target, live, 'setup')
      // A pull to the next snapshot usually replays the delta the recycled tree missed (cached:
      // step 1), then downloads and applies the new one (step 2); state.json and the record cache
      // are written atomically at the new record, the dirty mark, the ready mark, staging, the swap
      // and the result (file writes 1-6).
      const points = [
        'pull:download:before#1',
        'pull:apply:before#1',
        'pull:apply:progress#1',
        'pull:apply:after#1',
        'pull:download:before#2',
        'download:chunk#1',
        'download:chunk#3',
        'pull:download:after#2',
        'pull:apply:before#2',
        'pull:apply:progress#2',
        'pull:apply:after#2',
        'pull:flush',
        'file:written#1',
        'file:written#2',
        'file:written#3',
        'file:renamed#3',
        'file:written#4',
        'pull:swap',
        'symlink:made',
        'symlink:renamed',
        'file:written#5',
        'file:renamed#5',
        'file:written#6',
      ]
      const hit: string[] = []
      const missed: string[] = []
      const seen = { old: 0, new: 0 }
      // Two replicas follow the same snapshots, each killed at its own point: one build serves two.
      const second = join(dir, 'replica-2')
      await completePull(master, second, live, 'setup')
      for (let i = 0; i < points.length; i += 2) {
        mutate(master.source, master.files, ++master.round)
        const next = await build(master)
        const pairs = [[target, points[i]!], [second, points[i + 1]]].filter((p): p is [string, string] => p[1] !== undefined)
        await Promise.all(
          pairs.map(async ([replica, point]) => {
            const r = await runWithCrash(pullArgs(master, replica), point)
            ;(killedOrDone(point, r) ? hit : missed).push(point)
            seen[liveSnapshot(master, replica, [live, next], point) === next ? 'new' : 'old']++
            await completePull(master, replica, next, point)
          }),
        )
        live = next
      }
      t.diagnostic(`pull kill points: ${points.length} tried, ${hit.length} hit, ${missed.length} not reached (${missed.join(', ') || 'none'}); live tree after the kill: old ${seen.old}, new ${seen.new}, a mix 0`)
      assert.ok(points.length >= 20)
      assert.ok(hit.length >= points.length - 3, `only ${hit.length} of ${points.length} points were reached: ${missed.join(', ')}`)
    })
  })
})
