import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test, type TestContext } from 'node:test'
import { loadPrivateKey } from '../src/core/pointer.js'
import { digestOf } from '../src/core/tree-digest.js'
import type { ArchivePair, SnapshotRecord } from '../src/core/snapshot-record.js'
import { runCli, runJson, startServe } from './helpers/cli.js'
import {
  delLine,
  deltaManifest,
  fingerprint,
  fingerprintDiff,
  fLine, MT,
  HOSTILE_ARCHIVES,
  HostileStore,
  manifestOf,
  OK,
  REFUSED,
  runCliMeasured,
  sha256,
  tarFile,
  tarOf,
  VERIFY,
  zstd,
  type LineSpec,
  type Places,
} from './helpers/hostile-store.js'
import { copyTree, treeDiff, writeTree } from './helpers/tree.js'

/**
 * Issue 5, item 2: hostile archives and manifests, through the real CLI and a real HTTP server.
 * Each hostile snapshot is signed with the store's own key and its objects are named by their
 * true hashes (the threat is a compromised or buggy master, not a mirror), so only the replica's
 * parsing stands in the way. For every one: a documented non-zero exit code and a clear message,
 * the live tree unchanged, and nothing outside the staging tree touched.
 *
 * Cases run in LANES parallel lanes, each with its own copy of the store and its own server, and
 * each case on its own copy of a replica made live at snapshot 1 by a real pull.
 */
const LANES = 3

type Lines = readonly LineSpec[]
interface Ctx extends Places {
  hs: HostileStore
  rec1: SnapshotRecord
  /** Publishes snapshot 2 as a delta on snapshot 1. */
  delta(tar: Buffer, manifest: Lines | Buffer, over?: { tarBytes?: number; entries?: number; deleted?: number }): Promise<void>
  /** Publishes snapshot 2 as a full snapshot. */
  full(tar: Buffer, manifest: Lines | Buffer, over?: { tarBytes?: number; entries?: number; deleted?: number }): Promise<void>
  /** Publishes snapshot 2 with this pair in its record. */
  publishPair(pair: ArchivePair, kind?: 'delta' | 'full'): void
}

let refusedCount = 0
/** A measurement another test makes, or NaN after `ms` (a failed test never hangs this one). */
const within = (p: Promise<number>, ms: number): Promise<number> =>
  Promise.race([p, new Promise<number>((resolve) => setTimeout(() => resolve(NaN), ms).unref())])
let baselineRss: (rssKiB: number) => void = () => undefined
const baselineMeasured = new Promise<number>((resolve) => (baselineRss = resolve))
const BOMB_BYTES = 2 ** 30 // what the bomb unpacks to

/** The table's cases marked for the CLI (every one of them also runs against applyArchive in apply-archive.test.ts). */
const CLI_CASES = HOSTILE_ARCHIVES.filter((h) => h.cli)

/** Cases that need more than a tar and a manifest. */
interface Special {
  readonly name: string
  readonly code: number
  readonly message: RegExp
  readonly make: (c: Ctx, alt: AltStore) => Promise<void>
}
interface AltStore {
  /** Snapshots 2 (delta) and 3 (delta and full) that `snapshot build` really published, on the same snapshot 1. */
  rec2: SnapshotRecord
  rec3: SnapshotRecord
  /** Copies a pair's objects from the alt store into the case's lane store, as its master would have. */
  copy(c: Ctx, pair: ArchivePair): void
}

const SPECIALS: readonly Special[] = [
  // The manifest against its signed record: each field the replica compares, with valid hashes all round.
  { name: "a manifest header whose id is not the record's", code: REFUSED, message: /the delta manifest of snapshot 2 does not match its signed record/, make: (c) => c.delta(OK.tar, deltaManifest(OK.lines, { id: 3 })) },
  { name: "a manifest header whose counts are not the record's", code: REFUSED, message: /the delta manifest of snapshot 2 does not match its signed record/, make: (c) => c.delta(OK.tar, deltaManifest(OK.lines), { entries: 2 }) },
  {
    name: 'a manifest that deletes more than its header and record declare (past the mass-deletion guard)',
    code: REFUSED,
    message: /the manifest holds more than the 0 deletions its header declares/,
    make: (c) => c.delta(OK.tar, deltaManifest([delLine('zz.m3u'), delLine('top.m3u'), delLine('links'), delLine('dir'), ...OK.lines], { deleted: 0 })),
  },
  {
    name: 'a manifest bomb (a small .zst that unpacks far past the bound its counts allow)',
    code: REFUSED,
    message: /manifest of snapshot 2 unpacks to more than \d+ bytes/,
    make: async (c) => {
      const head = Buffer.from(deltaManifest(OK.lines).toString().split('\n')[0] + '\n')
      const spaces = Buffer.alloc(4 << 20, 0x20)
      const zst = await zstd((function* () {
        yield head
        for (let i = 0; i < 64; i++) yield spaces // 256 MiB
      })())
      c.publishPair({ ...(await c.hs.pair(OK.tar, deltaManifest(OK.lines))), manifest: c.hs.putObject(zst, 'manifest.zst') })
    },
  },
  {
    name: 'mix-and-match: two crafted pairs, the archive of one with the manifest of the other',
    code: REFUSED,
    message: /archive entry "one\.m3u" is not the one the manifest names next \("two\.m3u"\)/,
    make: async (c) => {
      const a = await c.hs.pair(tarOf(tarFile('one.m3u', '1')), deltaManifest([fLine('one.m3u', '1')]))
      const b = await c.hs.pair(tarOf(tarFile('two.m3u', '2')), deltaManifest([fLine('two.m3u', '2')]))
      c.publishPair({ ...b, archive: a.archive })
    },
  },
  {
    name: "mix-and-match: built snapshot 2's record with built snapshot 3's delta archive",
    code: REFUSED,
    message: /archive entry "alt\/three\.m3u" is not the one the manifest names next \("alt\/two\.m3u"\)/,
    make: async (c, alt) => {
      alt.copy(c, alt.rec2.delta!)
      alt.copy(c, alt.rec3.delta!)
      c.publishPair({ ...alt.rec2.delta!, archive: alt.rec3.delta!.archive })
    },
  },
  {
    name: "mix-and-match: built snapshot 3's full objects as snapshot 2's full",
    code: REFUSED,
    message: /the full manifest of snapshot 2 does not match its signed record/,
    make: async (c, alt) => {
      alt.copy(c, alt.rec3.full!)
      c.publishPair(alt.rec3.full!, 'full')
    },
  },
  {
    name: "a full archive whose entries do not add up to the record's signed tree digest",
    code: VERIFY,
    message: /the full archive adds up to tree digest [0-9a-f]{64}, the signed record says/,
    make: (c) => c.full(tarOf(tarFile('only.m3u', 'x')), manifestOf({ id: 2, kind: 'full', base: null }, [fLine('only.m3u', 'x')])),
  },
  {
    // Manifests carry no per-file hash: the signed tree digest is what binds a full archive's bytes.
    name: 'a full archive whose bytes differ from those the signed tree digest names (path, size and mode all agree)',
    code: VERIFY,
    message: /the full archive adds up to tree digest [0-9a-f]{64}, the signed record says/,
    make: async (c) => {
      const pair = await c.hs.pair(tarOf(tarFile('only.m3u', 'evil\n')), manifestOf({ id: 2, kind: 'full', base: null }, [fLine('only.m3u', 'evil\n')]))
      const treeDigest = digestOf([{ type: 'f', path: 'only.m3u', mode: 0o644, size: 5, mtime: MT, sha256: sha256('good\n') }], { mode: 0o755, mtime: MT })
      c.hs.publish(c.hs.snapshot(2, c.rec1, pair, 'full', { treeDigest }), [c.rec1])
    },
  },
  {
    // What a per-file hash in the manifest used to catch: other bytes in the archive. Now they are
    // other bytes of the archive object, which its signed sha256 refuses before a byte is applied.
    name: "a delta archive whose bytes were changed after signing (same length; the manifest untouched)",
    code: VERIFY,
    message: /objects\/[0-9a-f]{64}\.tar\.zst: sha256 is [0-9a-f]{64}, the signed pointer says [0-9a-f]{64}/,
    make: async (c) => {
      const pair = await c.hs.pair(OK.tar, deltaManifest(OK.lines))
      c.publishPair(pair)
      const other = await zstd(tarOf(tarFile('new.m3u', 'NEW\n')))
      assert.equal(other.length, pair.archive.length, 'the tampered archive keeps the signed length')
      writeFileSync(join(c.hs.dir, pair.archive.path), other)
    },
  },
]

describe('hostile archives and manifests are refused, and nothing outside staging is touched', { concurrency: LANES }, () => {
  let dir: string
  let source: string
  let keys: string
  let template: string
  let rec1: SnapshotRecord
  let alt: AltStore
  let altStore: string
  const lanes: { store: HostileStore; url: string; stop(): Promise<void> }[] = []
  const free: number[] = []
  const waiting: ((lane: number) => void)[] = []
  let caseNo = 0

  const acquire = (): Promise<number> => new Promise((r) => (free.length ? r(free.pop()!) : waiting.push(r)))
  const release = (lane: number): void => {
    const next = waiting.shift()
    if (next) next(lane)
    else free.push(lane)
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-hostile-'))
    source = join(dir, 'master')
    keys = join(dir, 'keys')
    const store = join(dir, 'store')
    mkdirSync(store)
    writeTree(source, { 'dir/a.m3u': 'a\n', 'dir/sub/b.m3u': 'b\n', 'links/to-dir': { link: '../dir' }, 'top.m3u': 'top\n', 'zz.m3u': 'zz\n' })
    writeTree(join(dir, 'outside'), { 'victim.txt': 'must stay\n' })
    writeFileSync(join(dir, 'sentinel.txt'), 'next to every replica\n')
    await runJson(['keygen', '--out', keys, '--quiet'])
    const key = loadPrivateKey(readFileSync(join(keys, 'snapshot.key')))
    const build = (src: string, st: string, ...extra: string[]) => runJson(['build', '--source', src, '--store', st, '--key', join(keys, 'snapshot.key'), '--quiet', ...extra])
    await build(source, store)
    rec1 = new HostileStore(store, key).record(1)

    // A second master history on the same snapshot 1, for mix-and-match of real objects.
    const altSource = join(dir, 'alt-master')
    altStore = join(dir, 'alt-store')
    copyTree(source, altSource) // the same tree, mtimes included
    cpSync(store, altStore, { recursive: true })
    writeTree(altSource, { 'alt/two.m3u': 'two\n' })
    writeFileSync(join(altSource, 'top.m3u'), 'top, second edition\n')
    await build(altSource, altStore)
    copyTree(altSource, join(dir, 'alt-expected-2'))
    unlinkSync(join(altSource, 'zz.m3u'))
    writeTree(altSource, { 'alt/three.m3u': 'three\n' })
    await build(altSource, altStore, '--full')
    const altHs = new HostileStore(altStore, key)

    // The replica every case starts from: live at snapshot 1, by a real pull over HTTP.
    const server = await startServe(store)
    template = join(dir, 'template')
    mkdirSync(template)
    const p = await runJson<{ action: string; id: number }>(['pull', '--from', server.url, '--target', join(template, 'replica'), '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--quiet'])
    await server.stop()
    assert.equal(p.action, 'swapped')
    assert.deepEqual(treeDiff(source, join(template, 'replica')), [])

    mkdirSync(join(dir, 'cases'))
    mkdirSync(join(dir, 'lanes'))
    for (let i = 0; i < LANES; i++) {
      const laneStore = join(dir, 'lanes', String(i))
      cpSync(store, laneStore, { recursive: true, filter: (src) => !src.endsWith('/.state') })
      const s = await startServe(laneStore)
      lanes.push({ store: new HostileStore(laneStore, key), url: s.url, stop: s.stop })
      free.push(i)
    }
    alt = {
      rec2: altHs.record(2),
      rec3: altHs.record(3),
      copy: (c, pair) => {
        for (const ref of [pair.archive, pair.manifest]) cpSync(join(altStore, ref.path), join(c.hs.dir, ref.path))
      },
    }
  })
  after(async () => {
    await Promise.all(lanes.map((l) => l.stop()))
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  /** A fresh copy of the template replica, with sentinels beside it. */
  function newCase(): { caseDir: string; replica: string; stateDir: string } {
    const caseDir = join(dir, 'cases', String(++caseNo))
    copyTree(template, caseDir)
    writeTree(caseDir, { 'sentinel.txt': 'beside the replica\n', 'sentinel-dir/keep.txt': 'keep\n' })
    return { caseDir, replica: join(caseDir, 'replica'), stateDir: join(caseDir, '.replica.snapshot') }
  }

  function ctxFor(hs: HostileStore, tmpTarget: string): Ctx {
    const publishPair = (pair: ArchivePair, kind: 'delta' | 'full' = 'delta'): void => hs.publish(hs.snapshot(2, rec1, pair, kind), [rec1])
    return {
      hs,
      rec1,
      outside: join(dir, 'outside'),
      tmpTarget,
      delta: async (tar, manifest, over = {}) => publishPair(await hs.pair(tar, Buffer.isBuffer(manifest) ? manifest : deltaManifest(manifest), over)),
      full: async (tar, manifest, over = {}) => publishPair(await hs.pair(tar, Buffer.isBuffer(manifest) ? manifest : manifestOf({ id: 2, kind: 'full', base: null }, manifest), over), 'full'),
      publishPair,
    }
  }

  /**
   * Publishes the case's snapshot 2 in a lane, pulls it into a fresh replica, and checks: the exit
   * code and message, the live tree, and that nothing but the staging tree and the state
   * directory changed anywhere in the test's directory or at the temp-dir target.
   */
  async function expectRefused(t: TestContext, h: { name: string; code: number; message: RegExp }, make: (c: Ctx) => Promise<void>, measure?: (rssKiB: number) => void): Promise<void> {
    const laneNo = await acquire()
    try {
      const lane = lanes[laneNo]!
      const tmpTarget = join(tmpdir(), `snapshot-hostile-outside-${randomUUID()}`)
      await make(ctxFor(lane.store, tmpTarget))
      const { caseDir, replica, stateDir } = newCase()
      const others = [join(dir, 'cases'), join(dir, 'lanes')] // other lanes' cases run meanwhile
      const before = [fingerprint(dir, others), fingerprint(caseDir, [stateDir]), fingerprint(join(stateDir, 'trees', 'a')), fingerprint(lane.store.dir)]
      const args = ['pull', '--from', lane.url, '--target', replica, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--retries', '0']
      const r = measure ? await runCliMeasured(args, tmpdir()) : await runCli(args)
      if (measure && 'peakRssKiB' in r) measure(r.peakRssKiB as number)
      assert.equal(r.code, h.code, `exit code ${r.code}, expected ${h.code}\n${r.stderr}`)
      const error = r.stderr.split('\n').find((l) => l.startsWith('snapshot: error'))
      assert.ok(error, `no error line:\n${r.stderr}`)
      assert.match(error, h.message)
      t.diagnostic(`exit ${r.code}: ${error.slice('snapshot: error '.length)}`)
      assert.deepEqual(treeDiff(source, replica), [], 'the live tree changed')
      assert.equal(readlinkSync(replica), '.replica.snapshot/trees/a')
      const after = [fingerprint(dir, others), fingerprint(caseDir, [stateDir]), fingerprint(join(stateDir, 'trees', 'a')), fingerprint(lane.store.dir)]
      for (let i = 0; i < before.length; i++) assert.deepEqual(fingerprintDiff(before[i]!, after[i]!), [], 'something outside the staging tree changed')
      assert.equal(existsSync(tmpTarget), false, `${tmpTarget} appeared`)
      const state = JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as { live: { id: number }; lastPull: { ok: boolean } }
      assert.equal(state.live.id, 1)
      assert.equal(state.lastPull.ok, false)
      refusedCount++
    } finally {
      release(laneNo)
    }
  }

  for (const h of CLI_CASES) {
    test(`refuses ${h.name}`, (t) =>
      expectRefused(t, h, async (c) => {
        const { tar, manifest, tarBytes } = h.make(c)
        // The record repeats the header's counts, as a master's would: only the body is hostile.
        const head = JSON.parse(manifest.subarray(0, manifest.indexOf(10)).toString()) as { entries: number; deleted: number }
        await c.delta(tar, manifest, { ...(tarBytes === undefined ? {} : { tarBytes }), entries: head.entries, deleted: head.deleted })
      }))
  }
  for (const h of SPECIALS) test(`refuses ${h.name}`, (t) => expectRefused(t, h, (c) => h.make(c, alt)))

  // The bomb: refused, with nothing touched (a real test), and in bounded memory (measured).
  let bombRss: (rssKiB: number) => void = () => undefined
  const bombMeasured = new Promise<number>((resolve) => (bombRss = resolve))
  test(`refuses a decompression bomb (a small .zst that unpacks to ${BOMB_BYTES / 2 ** 30} GiB)`, async (t) => {
    const h = { name: 'bomb', code: REFUSED, message: /unpacks to more than the 1536 bytes it declares/ }
    await expectRefused(
      t,
      h,
      async (c) => {
        const head = tarFile('bomb.bin', '', { size: BOMB_BYTES - 2048 }) // a header that promises ~1 GiB of data
        const zeros = Buffer.alloc(4 << 20)
        const zst = await zstd((function* () {
          yield head
          for (let n = head.length; n < BOMB_BYTES; n += zeros.length) yield zeros
        })())
        assert.ok(zst.length < 128 << 10, `the bomb is ${zst.length} bytes compressed`)
        const manifest = deltaManifest([{ t: 'f', p: 'bomb.bin', m: 0o644, s: BOMB_BYTES - 2048, u: MT }])
        c.publishPair(await c.hs.pair({ zst, tarBytes: 1536 }, manifest))
      },
      (rss) => bombRss(rss),
    )
  })
  test('the decompression bomb is refused in bounded memory', async () => {
    const rss = await within(bombMeasured, 60_000)
    const baseline = await within(baselineMeasured, 60_000)
    process.stdout.write(`# decompression bomb: ${BOMB_BYTES} bytes from a small .zst; peak RSS of the pull: ${(rss / 1024).toFixed(1)} MiB (a normal pull: ${(baseline / 1024).toFixed(1)} MiB)\n`)
    assert.ok(rss * 1024 < BOMB_BYTES / 4, `peak RSS ${rss} KiB is not far below the bomb's ${BOMB_BYTES} bytes`)
  })

  // ---- accepted, as they must be

  async function expectAccepted(make: (c: Ctx) => Promise<void>, check: (replica: string) => void, measure?: (rssKiB: number) => void): Promise<void> {
    const laneNo = await acquire()
    try {
      const lane = lanes[laneNo]!
      await make(ctxFor(lane.store, join(tmpdir(), `snapshot-hostile-outside-${randomUUID()}`)))
      const { caseDir, replica, stateDir } = newCase()
      const outside = fingerprint(join(dir, 'outside'))
      const sentinels = fingerprint(join(caseDir, 'sentinel-dir'))
      const args = ['pull', '--from', lane.url, '--target', replica, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--retries', '0', '--json', '--quiet']
      const r = measure ? await runCliMeasured(args, tmpdir()) : await runCli(args)
      if (measure && 'peakRssKiB' in r) measure(r.peakRssKiB as number)
      assert.equal(r.code, 0, r.stderr)
      assert.equal((JSON.parse(r.stdout) as { action: string }).action, 'swapped')
      assert.equal(readlinkSync(replica), '.replica.snapshot/trees/b')
      assert.deepEqual(treeDiff(source, join(stateDir, 'trees', 'a')), [], 'the previous tree changed')
      assert.deepEqual(fingerprintDiff(outside, fingerprint(join(dir, 'outside'))), [])
      assert.deepEqual(fingerprintDiff(sentinels, fingerprint(join(caseDir, 'sentinel-dir'))), [])
      check(replica)
    } finally {
      release(laneNo)
    }
  }

  test('accepts NFC and NFD spellings of one name as the two different names they are on Linux', () =>
    expectAccepted(
      (c) => c.delta(tarOf(tarFile('cafe\u0301.m3u', 'nfd\n'), tarFile('caf\u00e9.m3u', 'nfc\n')), [fLine('cafe\u0301.m3u', 'nfd\n'), fLine('caf\u00e9.m3u', 'nfc\n')]),
      (replica) => {
        assert.equal(readFileSync(join(replica, 'caf\u00e9.m3u'), 'utf8'), 'nfc\n')
        assert.equal(readFileSync(join(replica, 'cafe\u0301.m3u'), 'utf8'), 'nfd\n')
      },
    ))

  test('a deletion below a symlink deletes nothing through it (a no-op, as a replay after a crash needs)', () =>
    expectAccepted(
      (c) => c.delta(OK.tar, [delLine('links/to-dir/a.m3u'), ...OK.lines]),
      (replica) => {
        assert.equal(readFileSync(join(replica, 'dir/a.m3u'), 'utf8'), 'a\n')
        assert.equal(readlinkSync(join(replica, 'links/to-dir')), '../dir')
      },
    ))

  test("a real build's snapshot 2, published through the same lanes, is accepted (the machinery is sound)", () =>
    expectAccepted(
      async (c) => {
        alt.copy(c, alt.rec2.delta!)
        c.hs.publish(alt.rec2, [rec1])
      },
      (replica) => assert.deepEqual(treeDiff(join(dir, 'alt-expected-2'), replica), []),
      (rss) => baselineRss(rss),
    ))

})

test('every hostile input above was refused', () => {
  const total = CLI_CASES.length + SPECIALS.length + 1
  console.log(`# hostile inputs refused through the CLI: ${refusedCount} of ${total}`)
  assert.equal(refusedCount, total)
})
