/**
 * `npm run bench -- --files N [--replicas R] [--trees 3] [--work DIR] [--replica-homes DIR] [--no-baselines]`: our build and pull
 * side by side with what a user would pick instead (GNU tar + zstd, rsync), on one corpus, in one
 * run, with the issue's target ratios checked at the end.
 *
 * Steps, on a corpus of N playlists (scripts/corpus.ts):
 *   ours    full build; a fresh replica's full pull over loopback HTTP;
 *           two hours of change to reach the steady state (every replica's second tree filled),
 *           the first of them timed on the fresh replica: a new replica's second hour (build + pull);
 *   both    the old trees the baselines start from (bench-baselines.ts, before the change);
 *   change  one hour: 10% modified, 0.5% deleted, 0.5% added;
 *   ours    the delta build; one replica's delta pull --swap; R replicas pulling at once
 *           (reported from the start of the build to the last swap); a 1k-change hour on top
 *           (its build and one replica's pull), and the same on a tree a tenth the size (prepared
 *           likewise, untimed), for flatness;
 *   theirs  tar --listed-incremental level 1 and its apply; rsync -aW --delete to 1 and R replicas;
 *           tar's level 1 applied onto R replicas at once, then sync (the floor under our R-replica row).
 * Before a timed pull the tree it writes into is warmed (metadata), as the baselines' destinations are;
 * before a timed build the master's tree (its data before the full build), as the baselines' sources are.
 * Before every timed step, ours and theirs, dirty pages are written out (`sync`, flushDirtyPages):
 * master and replicas share one filesystem here, and a replica's syncfs must not pay for the
 * master's writes. Every replica is checked against the master at the end. Figures are in the table; ratios
 * against the targets of BENCHMARKS.md follow it.
 */
import { spawn } from 'node:child_process'
import { mkdir, readdir, stat } from 'node:fs/promises'
import { cpus, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { zstdBackend } from '../src/archive/zstd-codec.js'
import { ExitCode, UsageError } from '../src/core/errors.js'
import { ReplicaLayout, slotNames } from '../src/replica/replica-layout.js'
import { loadState } from '../src/replica/replica-state.js'
import { chooseSlot } from '../src/replica/slot-policy.js'
import { prepareBaselines, measureDeltaBaselines, cleanupBaselines, type BaselineStep } from './bench-baselines.js'
import { flushDirtyPages, formatMarkdownTable, formatTextTable, logLine, measureCommand, removeTree, treeDifference, warmTree, wholeNumberFlag, type BenchRow, type Measurement } from './bench-lib.js'
import { generateCorpus, mutateCorpus } from './corpus.js'

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const bin = join(repo, 'bin/snapshot')

interface Ours {
  label: string
  m: Measurement
  json: Record<string, unknown>
  startedMs: number
}

async function snapshot(args: string[], label: string, flushFirst = true): Promise<Ours> {
  if (flushFirst) await flushDirtyPages()
  const startedMs = Date.now()
  // As users run it: through the launcher, which gives node its flags (bin/snapshot).
  const m = await measureCommand([bin, ...args, '--json', '--quiet'])
  if (m.exitCode !== 0) throw new Error(`${label}: snapshot ${args.join(' ')} exited ${m.exitCode}\n${m.stderr}`)
  const json = JSON.parse(m.stdout) as Record<string, unknown>
  // Logged as it happens: a long run stopped before its table still leaves its figures.
  const swap = typeof json.swappedAtMs === 'number' ? `, swapped after ${((json.swappedAtMs - startedMs) / 1000).toFixed(2)} s` : ''
  if (label.startsWith('ours')) logLine(`bench: ${label}: ${m.seconds.toFixed(2)} s, peak RSS ${(m.peakRssBytes / 1048576).toFixed(1)} MiB${swap}`)
  return { label, m, json, startedMs }
}

/** A pull's time to its swap (the new tree is live); the spare's catch-up comes after. */
function toSwapSeconds(o: Ours, fromMs = o.startedMs): number {
  const at = o.json.swappedAtMs
  return typeof at === 'number' ? (at - fromMs) / 1000 : o.m.seconds
}

function catchUpNote(o: Ours): string {
  const c = o.json.catchUp as { filesWritten: number; seconds: number } | null
  return c ? `; then caught up the spare tree (${c.filesWritten} files) in ${c.seconds.toFixed(2)} s, command ${o.m.seconds.toFixed(2)} s in all` : ''
}

async function dirSize(dir: string): Promise<number> {
  let total = 0
  for (const name of await readdir(dir).catch(() => [] as string[])) total += (await stat(join(dir, name))).size
  return total
}

async function main(): Promise<void> {
  // The launcher runs the `node` on the PATH: this one.
  process.env.PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ''}`
  const { values } = parseArgs({
    options: {
      files: { type: 'string', default: '100000' },
      replicas: { type: 'string', default: '10' },
      work: { type: 'string', default: join(repo, '.bench') },
      'no-baselines': { type: 'boolean', default: false },
      trees: { type: 'string', default: '3' },
      keep: { type: 'boolean', default: false },
      'replica-homes': { type: 'string' },
    },
  })
  // The flatness row pulls 1,000 changes on a tree a tenth the size: that tree needs 1,000 files.
  const files = wholeNumberFlag('--files', values.files, 10_000)
  const replicas = wholeNumberFlag('--replicas', values.replicas, 1)
  const run = join(resolve(values.work), `run-${Date.now()}`)
  const source = join(run, 'master')
  const store = join(run, 'store')
  // --replica-homes DIR: replica i lives in DIR/replica-<i>, made beforehand (bench-on-loopfs.sh
  // --fs-per-replica mounts a filesystem of its own there, as each replica has on its own
  // machine), beside the copy the baselines' rsync and tar write for that replica.
  const homes = values['replica-homes'] === undefined ? null : resolve(values['replica-homes'])
  const home = (i: number): string => join(homes ?? run, `replica-${String(i).padStart(2, '0')}`)
  const target = (i: number): string => (homes ? join(home(i), 'replica') : home(i))
  const replicaCopies = homes ? Array.from({ length: replicas }, (_, k) => join(home(k + 1), 'rsync')) : undefined
  await mkdir(run, { recursive: true })
  const started = new Date()
  logLine(`bench: ${files} files, ${replicas} replicas with ${values.trees} trees each, in ${run}; zstd backend ${zstdBackend()}, Node ${process.version}`)

  const corpus = await generateCorpus({ files, out: source, seed: 'bench' })
  logLine(`bench: corpus of ${corpus.files} files in ${corpus.dirs} dirs, ${corpus.bytes} bytes, in ${corpus.seconds.toFixed(1)} s`)
  await sleep(2100) // past the racy window: files this fresh would be read again by the next build
  const site = await openSite(run, source, values.trees)
  const rows: BenchRow[] = []
  const ours = (o: Ours, extra: Omit<BenchRow, 'label' | 'seconds' | 'peakRssMiB'> = {}): void => {
    rows.push({ label: o.label, seconds: o.m.seconds, peakRssMiB: o.m.peakRssBytes / 1048576, ...extra })
  }
  const build = site.build
  // Three trees: the live one, the previous one for instant rollback, and a spare caught up after
  // each swap, so a pull replays one hour before it swaps (slot-policy.ts).
  // With --trees 2 a pull rebuilds the previous tree, replaying two hours before its swap.
  // Like the baselines' destinations, the tree a pull will write into is warmed (metadata) before
  // a timed pull: on a replica of its own that tree was caught up an hour before, not pushed out
  // of the cache by ten other replicas' trees and the baselines' copies on one disk. Only that
  // tree: eleven replicas' trees together do not fit in the page cache at a million files.
  const warmReplica = (i: number): Promise<void> => warmTreeToWrite(target(i), values.trees)
  const pull = (i: number, label: string, flushFirst = true) => site.pull(target(i), label, flushFirst)

  try {
    await warmTree(source, 'data')
    const full = await build('ours: full build')
    ours(full, { storeBytes: await dirSize(join(store, 'objects')), transferredBytes: full.json.fullBytes as number })
    const fresh = await pull(0, 'ours: full pull into an empty replica')
    rows.push({ label: fresh.label, seconds: toSwapSeconds(fresh), peakRssMiB: fresh.m.peakRssBytes / 1048576, transferredBytes: (fresh.json.plan as { downloadBytes: number }).downloadBytes, notes: `to the swap${catchUpNote(fresh)}` })

    logLine('bench: two hours of change to reach the steady state on every replica (untimed, but for the new replica\'s second hour)')
    // Untimed, so two at a time: at a million files this is ~30 whole-tree extractions.
    const prepareAll = (from: number): Promise<void> => inPairs(from, replicas, (i) => pull(i, 'prepare'))
    await prepareAll(1)
    for (const hour of [1, 2]) {
      await mutateCorpus({ out: source, seed: `bench-hour-${hour}` })
      await sleep(2100)
      if (hour === 2) {
        await build('prepare')
        await prepareAll(0)
        continue
      }
      // Replica 0's second pull: a new replica's second hour (issue 15), timed like the steady hour
      // below (its build, then its pull to the swap), before the other replicas pull.
      // Every timed build starts from a warm master tree (its metadata), as the steady hour's does: a
      // master is a machine of its own, where no replica's whole-tree writes (here the full pull
      // and its catch-up, 2M files at 1M) push its tree out of the cache between two builds.
      await warmTree(source, 'metadata')
      const secondBuild = await build("ours: a new replica's second hour, delta build")
      await warmReplica(0)
      const second = await pull(0, "ours: a new replica's second hour, delta pull --swap")
      rows.push(secondHourRow(secondBuild, second))
      await inPairs(1, replicas, (i) => pull(i, 'prepare'))
    }

    const prepared = values['no-baselines'] ? null : await prepareBaselines({ corpusDir: source, workDir: join(run, 'baselines'), replicas, ...(replicaCopies ? { replicaCopies } : {}) })
    const hour = await mutateCorpus({ out: source, seed: 'bench-hour-3' })
    logLine(`bench: the measured hour: ${hour.modified} modified, ${hour.deleted} deleted, ${hour.added} added`)
    await sleep(2100)

    await warmTree(source, 'metadata')
    const delta = await build('ours: delta build (one hour)')
    ours(delta, { storeBytes: delta.json.deltaBytes as number, transferredBytes: delta.json.deltaBytes as number, notes: `${delta.json.filesRead} files read` })
    await warmReplica(0)
    const one = await pull(0, 'ours: delta pull --swap, 1 replica')
    const applied = one.json.applied as { filesWritten: number }
    rows.push({ label: one.label, seconds: toSwapSeconds(one), peakRssMiB: one.m.peakRssBytes / 1048576, transferredBytes: (one.json.plan as { downloadBytes: number }).downloadBytes, notes: `${applied.filesWritten} files written, to the swap${catchUpNote(one)}` })

    for (let i = 1; i <= replicas; i++) await warmReplica(i)
    await flushDirtyPages()
    const manyStartMs = Date.now()
    const many = await Promise.all(Array.from({ length: replicas }, (_, k) => pull(k + 1, 'many', false)))
    const lastSwapSeconds = Math.max(...many.map((p) => toSwapSeconds(p, manyStartMs)))
    const allDoneSeconds = (Date.now() - manyStartMs) / 1000
    logLine(`bench: ${replicas} replicas at once: last swap after ${lastSwapSeconds.toFixed(2)} s, all done after ${allDoneSeconds.toFixed(2)} s, peak RSS ${(Math.max(...many.map((p) => p.m.peakRssBytes)) / 1048576).toFixed(1)} MiB`)
    rows.push({
      label: `ours: build + ${replicas} replicas pulling at once (build start to last swap)`,
      seconds: delta.m.seconds + lastSwapSeconds,
      peakRssMiB: Math.max(delta.m.peakRssBytes, ...many.map((p) => p.m.peakRssBytes)) / 1048576,
      transferredBytes: delta.json.deltaBytes as number,
      notes: `pulls alone ${lastSwapSeconds.toFixed(2)} s to the last swap, ${allDoneSeconds.toFixed(2)} s with the spares caught up; peak RSS of one process`,
    })

    let baselineSteps: BaselineStep[] = []
    if (prepared) {
      const results = await measureDeltaBaselines(prepared)
      baselineSteps = results.steps
      rows.push(...results.rows)
    }

    // The flatness row compares a 1k-change pull on this tree with the same on a tree a tenth the
    // size, both in this run: the disk's speed varies from run to run, a ratio across runs with it.
    logLine(`bench: a replica of a ${Math.round(files / 10)}-file tree, for the flatness row (untimed)`)
    const tenth = await prepareTenthTree(join(run, 'tenth'), Math.round(files / 10), values.trees)
    try {
      logLine('bench: a 1k-change hour on top, for the flatness row')
      await mutateCorpus({ out: source, seed: 'bench-small', ...oneThousandChanges(files) })
      await sleep(2100)
      await warmTree(source, 'metadata') // as before the other timed builds: the baselines' copies have pushed it out of the cache
      ours(await build('ours: 1k-change delta build'), { notes: 'a build every few minutes costs this' })
      await warmReplica(0) // as before the other timed pulls: at 1M the baselines' copies have pushed it out of the cache
      const small = await pull(0, 'ours: 1k-change delta pull --swap, 1 replica')
      rows.push(smallPullRow(small))
      const tenthFiles = Math.round(files / 10)
      const other = await tenth.oneThousand(`ours: the same 1k-change build on a ${tenthFiles}-file tree`, `ours: the same 1k-change pull on a ${tenthFiles}-file tree`)
      ours(other.built)
      rows.push(smallPullRow(other.pulled))
    } finally {
      await tenth.stop()
    }

    const machine = `${cpus().length} x ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, zstd ${zstdBackend()}`
    process.stdout.write(`\n${files} files, ${replicas} replicas with ${values.trees} trees each; ${machine}; ${started.toISOString()}\n\n`)
    process.stdout.write(formatTextTable(rows))
    process.stdout.write('\n' + ratios(rows, baselineSteps, replicas) + '\n')
    process.stdout.write('\nMarkdown:\n\n' + formatMarkdownTable(rows))

    // After the table, so that a long run's figures are out before this last whole-tree pass;
    // a difference still fails the run.
    logLine('bench: checking every replica against the master')
    for (let i = 0; i <= replicas; i++) {
      if (i > 0) await pull(i, 'catch up') // the 1k hour
      const diff = await treeDifference(source, target(i) + '/', files <= 200_000 ? 'content' : 'listing') // '/': through the symlink
      if (diff) throw new Error(`replica ${i} differs from the master: ${diff}`)
    }
    process.stdout.write(`\nevery replica (${replicas + 1}) matches the master (${files <= 200_000 ? 'content' : 'listing'})\n`)
    if (prepared && !values.keep) await cleanupBaselines(prepared)
  } finally {
    await site.stop()
    if (!values.keep) {
      await removeTree(run)
      if (homes) for (let i = 0; i <= replicas; i++) await removeReplica(target(i))
    }
  }
}

/** A new replica's second hour, build start to the swap, to set beside the steady hour's build + pull. */
function secondHourRow(build: Ours, pulled: Ours): BenchRow {
  const written = (pulled.json.applied as { filesWritten: number }).filesWritten
  const steps = ((pulled.json.plan as { steps: { id: number; use: string }[] }).steps).map((s) => `${s.use} ${s.id}`).join(' + ')
  return {
    label: "ours: a new replica's second hour (build + pull --swap, 1 replica)",
    seconds: build.m.seconds + toSwapSeconds(pulled),
    peakRssMiB: Math.max(build.m.peakRssBytes, pulled.m.peakRssBytes) / 1048576,
    transferredBytes: (pulled.json.plan as { downloadBytes: number }).downloadBytes,
    notes: `build ${build.m.seconds.toFixed(2)} s + pull ${toSwapSeconds(pulled).toFixed(2)} s to the swap, via ${steps}, ${written} files written before it${catchUpNote(pulled)}`,
  }
}

function smallPullRow(o: Ours): BenchRow {
  const written = (o.json.applied as { filesWritten: number }).filesWritten
  return { label: o.label, seconds: toSwapSeconds(o), peakRssMiB: o.m.peakRssBytes / 1048576, notes: `${written} files written, to the swap${catchUpNote(o)}` }
}

/** A replica's live symlink and its state directory (its trees, its cache) go. */
async function removeReplica(replica: string): Promise<void> {
  await removeTree(new ReplicaLayout(replica).stateDir)
  await removeTree(replica)
}

/** Warms the metadata of the tree the replica's next pull writes into (slot-policy.ts). */
async function warmTreeToWrite(replica: string, trees: string): Promise<void> {
  const layout = new ReplicaLayout(replica)
  const state = await loadState(layout.stateFile, slotNames(Number(trees)))
  if (!state) return
  const slot = chooseSlot(state)
  if (state.slots[slot]?.status !== 'empty') await warmTree(layout.tree(slot), 'metadata') // an empty tree has nothing to warm
}

/** ~1,000 changes whatever the tree's size: 800 modified, 100 deleted, 100 added. */
function oneThousandChanges(files: number): { modifyFraction: number; deleteFraction: number; addFraction: number } {
  return { modifyFraction: 800 / files, deleteFraction: 100 / files, addFraction: 100 / files }
}

/**
 * A master and one replica of a smaller tree, on the same filesystem, brought to the steady state
 * as the big one (a full pull, two hours), untimed; then its timed 1k-change build and pull,
 * prepared and warmed like the big tree's.
 */
async function prepareTenthTree(dir: string, files: number, trees: string): Promise<{ oneThousand(buildLabel: string, pullLabel: string): Promise<{ built: Ours; pulled: Ours }>; stop(): Promise<void> }> {
  const source = join(dir, 'master')
  const replica = join(dir, 'replica')
  await generateCorpus({ files, out: source, seed: 'bench-tenth' })
  await sleep(2100)
  const site = await openSite(dir, source, trees)
  const build = () => site.build('prepare')
  const pull = (label: string) => site.pull(replica, label)
  try {
    await build()
    await pull('prepare')
    for (const hour of [1, 2]) {
      await mutateCorpus({ out: source, seed: `bench-tenth-hour-${hour}` })
      await sleep(2100)
      await build()
      await pull('prepare')
    }
  } catch (err) {
    await site.stop()
    throw err
  }
  return {
    async oneThousand(buildLabel, pullLabel) {
      await mutateCorpus({ out: source, seed: 'bench-tenth-small', ...oneThousandChanges(files) })
      await sleep(2100)
      await warmTree(source, 'metadata')
      const built = await site.build(buildLabel)
      await warmTreeToWrite(replica, trees)
      const pulled = await pull(pullLabel)
      const diff = await treeDifference(source, replica + '/', 'listing')
      if (diff) throw new Error(`the ${files}-file replica differs from its master: ${diff}`)
      return { built, pulled }
    },
    stop: site.stop,
  }
}

/** A master's store and signing keys under `dir`, and the server its replicas pull from. */
interface Site {
  build(label: string): Promise<Ours>
  pull(replica: string, label: string, flushFirst?: boolean): Promise<Ours>
  stop(): Promise<void>
}

async function openSite(dir: string, source: string, trees: string): Promise<Site> {
  const store = join(dir, 'store')
  const keys = join(dir, 'keys')
  await mkdir(store, { recursive: true })
  await snapshot(['keygen', '--out', keys], 'keygen')
  const server = await startServe(store)
  return {
    build: (label) => snapshot(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key')], label),
    pull: (replica, label, flushFirst = true) =>
      snapshot(['pull', '--from', server.url, '--target', replica, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--max-delete', '100', '--trees', trees], label, flushFirst),
    stop: () => server.stop(),
  }
}

/** The issue's target ratios, from this run's own figures. */
function ratios(rows: readonly BenchRow[], steps: readonly BaselineStep[], replicas: number): string {
  const ours = (prefix: string): BenchRow | undefined => rows.find((r) => r.label.startsWith(prefix))
  const theirs = (key: string): BaselineStep | undefined => steps.find((s) => s.key === key)
  const lines: string[] = ['target                                              ours / theirs      must   aim']
  const add = (what: string, a: number | undefined, b: number | undefined, must: string, aim: string): void => {
    const v = a !== undefined && b !== undefined && b > 0 ? (a / b).toFixed(2) : 'n/a'
    lines.push(`${what.padEnd(52)}${v.padStart(13)}   ${must.padStart(6)} ${aim.padStart(5)}`)
  }
  add('delta build / tar level 1 + zstd', ours('ours: delta build')?.seconds, theirs('level1Create')?.measurement.seconds, '<= 2', '<= 1')
  add('delta pull / tar incremental apply', ours('ours: delta pull')?.seconds, theirs('level1Apply')?.measurement.seconds, '<= 1.5', '<= 1')
  add(`${replicas} replicas / rsync to ${replicas}`, ours('ours: build +')?.seconds, theirs('rsyncMany')?.measurement.seconds, '<= 0.5', '<=.25')
  const tarMany = sum(theirs('level1Create')?.measurement.seconds, theirs('level1ApplyMany')?.measurement.seconds)
  add(`${replicas} replicas / tar L1 build + apply to ${replicas} + sync`, ours('ours: build +')?.seconds, tarMany, '-', '-')
  add('full build / tar | zstd', ours('ours: full build')?.seconds, theirs('fullCreate')?.measurement.seconds, '<= 3', '<= 2')
  add('full pull / zstd -dc | tar x', ours('ours: full pull')?.seconds, theirs('fullExtract')?.measurement.seconds, '<= 3', '<= 2')
  add('delta archive bytes / tar level 1 bytes', ours('ours: delta build')?.transferredBytes, theirs('level1Create')?.archiveBytes, '<= 1.2', '<= 1')
  const peak = Math.max(...rows.filter((r) => r.label.startsWith('ours:')).map((r) => r.peakRssMiB ?? 0))
  lines.push(`${'peak RSS of any build or pull (MiB)'.padEnd(52)}${peak.toFixed(0).padStart(13)}   ${'<= 512'.padStart(6)} ${'<=256'.padStart(5)}`)
  const deltaPeak = ours('ours: delta build')?.peakRssMiB
  lines.push(`${'peak RSS of the delta build (MiB; flat in the tree)'.padEnd(52)}${(deltaPeak ?? NaN).toFixed(0).padStart(13)}   ${'-'.padStart(6)} ${'<=128'.padStart(5)}`)
  const steady = sum(ours('ours: delta build')?.seconds, ours('ours: delta pull')?.seconds)
  add("new replica's second hour / steady hour", ours("ours: a new replica's second hour")?.seconds, steady, '<= 2', '<= 1')
  add('1k-change pull: this tree / a tree a tenth the size', ours('ours: 1k-change delta pull')?.seconds, ours('ours: the same 1k-change pull')?.seconds, '<= 1.5', 'flat')
  add('1k-change build: this tree / a tree a tenth the size', ours('ours: 1k-change delta build')?.seconds, ours('ours: the same 1k-change build')?.seconds, '-', 'flat')
  lines.push(`${'1k-change delta build (s; at 1M files)'.padEnd(52)}${(ours('ours: 1k-change delta build')?.seconds ?? NaN).toFixed(2).padStart(13)}   ${'-'.padStart(6)} ${'<= 3'.padStart(5)}`)
  const manyRow = ours('ours: build +')
  lines.push(`${`${replicas} replicas, build start to last swap (s)`.padEnd(52)}${(manyRow?.seconds ?? NaN).toFixed(1).padStart(13)}   ${'< 120'.padStart(6)} ${'< 60'.padStart(5)}`)
  return lines.join('\n')
}

function sum(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a + b
}

/** Runs `work` for first..last, two at a time. */
async function inPairs(first: number, last: number, work: (i: number) => Promise<unknown>): Promise<void> {
  for (let i = first; i <= last; i += 2) await Promise.all([work(i), ...(i + 1 <= last ? [work(i + 1)] : [])])
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

async function startServe(store: string): Promise<{ url: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [bin, 'serve', '--store', store, '--host', '127.0.0.1', '--port', '0', '--json', '--quiet'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const url = await new Promise<string>((ok, fail) => {
    createInterface({ input: child.stdout! }).once('line', (l) => ok((JSON.parse(l) as { url: string }).url))
    child.once('exit', (code) => fail(new Error(`snapshot serve exited ${code}`)))
  })
  return {
    url,
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null) return done()
        child.once('exit', () => done())
        child.kill('SIGTERM')
      }),
  }
}

main().catch((err: Error) => {
  // Bad flags: the message alone, exit 2; anything else: the stack, to find where a long run broke.
  const usage = err instanceof UsageError
  process.stderr.write(`bench failed: ${usage ? err.message : (err.stack ?? err.message)}\n`)
  process.exitCode = usage ? ExitCode.Usage : ExitCode.Failure
})
