import { spawnSync } from 'node:child_process'
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import fc from 'fast-check'
import { runCli, startServe, type CliResult } from './helpers/cli.js'
import { applyMutation, materialize, mutationArb, treeArb, type Mutation, type TreeEntrySpec } from './helpers/random-tree.js'
import { describeTree, treeDiff } from './helpers/tree.js'

/**
 * The property: whatever the tree and whatever the operators do (edits of every kind, builds,
 * full builds, pulls that some replicas skip, replica rollbacks and unpins, fleet rollbacks,
 * prunes), after every pull a replica's live tree equals, byte for byte and deletions included,
 * the master's tree at the snapshot the pull reports; after a rollback it equals the snapshot
 * rolled back to; a pinned replica does not move. The model is a copy of the master's tree taken
 * at each snapshot id. Everything runs through the real CLI, mostly from a store directory (fast),
 * in some runs over `snapshot serve`.
 *
 * Deterministic by default (fixed seed). PROPERTY_SEED, PROPERTY_RUNS, PROPERTY_TIME_LIMIT
 * (seconds) and PROPERTY_PATH (with the seed: replay a counterexample fast-check reported)
 * override it; PROPERTY_KEEP=1 keeps the directory of a failing run for inspection.
 */

const SEED = process.env.PROPERTY_SEED ? Number(process.env.PROPERTY_SEED) : 20_251_121
const RUNS = Number(process.env.PROPERTY_RUNS ?? 20)
const TIME_LIMIT_MS = Number(process.env.PROPERTY_TIME_LIMIT ?? 60) * 1000
const REPLAY_PATH = process.env.PROPERTY_PATH
const KEEP_FAILED = process.env.PROPERTY_KEEP === '1'
const COMMAND_TIMEOUT_MS = 30_000

type PullMode = 'force' | 'max-delete' | 'guarded' | 'stage'
type Op =
  | { readonly op: 'mutate'; readonly muts: readonly Mutation[] }
  | { readonly op: 'build'; readonly full: boolean }
  | { readonly op: 'mutate-build'; readonly muts: readonly Mutation[]; readonly full: boolean }
  | { readonly op: 'pull'; readonly replica: number; readonly mode: PullMode; readonly unpin: boolean }
  | { readonly op: 'rollback'; readonly replica: number; readonly to: number | null }
  | { readonly op: 'unpin'; readonly replica: number }
  | { readonly op: 'fleet-rollback'; readonly to: number }
  | { readonly op: 'prune'; readonly keep: number }
  | { readonly op: 'verify-store' }

interface Scenario {
  readonly tree: readonly TreeEntrySpec[]
  readonly replicas: number
  readonly http: boolean
  readonly ops: readonly Op[]
}

const weighted = <T>(common: T, rare: T, odds: number): fc.Arbitrary<T> => fc.oneof({ weight: odds, arbitrary: fc.constant(common) }, { weight: 1, arbitrary: fc.constant(rare) })

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('mutate' as const), muts: fc.array(mutationArb, { minLength: 1, maxLength: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('build' as const), full: weighted(false, true, 5) }) },
  {
    weight: 5,
    arbitrary: fc.record({ op: fc.constant('mutate-build' as const), muts: fc.array(mutationArb, { minLength: 1, maxLength: 5 }), full: weighted(false, true, 6) }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('pull' as const),
      replica: fc.nat(),
      mode: fc.constantFrom<PullMode>('force', 'max-delete', 'guarded', 'stage'),
      unpin: weighted(false, true, 2),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('rollback' as const), replica: fc.nat(), to: fc.option(fc.nat()) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('unpin' as const), replica: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('fleet-rollback' as const), to: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('prune' as const), keep: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'verify-store' as const }) },
)

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  tree: treeArb,
  replicas: fc.constantFrom(2, 3),
  http: weighted(false, true, 4),
  ops: fc.array(opArb, { minLength: 3, maxLength: 12, size: 'max' }),
})

/** Counts over all runs, printed at the end: what a typical run of the property exercised. */
const stats = { runs: 0, commands: 0, ops: {} as Record<string, number>, pulls: 0, treesCompared: 0, guardTrips: 0, guardDue: 0, mutations: 0, httpRuns: 0, seconds: 0 }
const count = (what: string): void => void (stats.ops[what] = (stats.ops[what] ?? 0) + 1)

let keys: string
before(async () => {
  keys = mkdtempSync(join(tmpdir(), 'snapshot-prop-keys-'))
  const r = await runCli(['keygen', '--out', keys, '--json'], { timeoutMs: COMMAND_TIMEOUT_MS })
  if (r.code !== 0) throw new Error(`keygen exited ${r.code}: ${r.stderr}`)
})
after(() => rmSync(keys, { recursive: true, force: true }))

interface Replica {
  readonly name: string
  readonly target: string
  readonly trees: number
  live: number | null
  pinned: boolean
  /** Every snapshot this replica served. */
  readonly seen: Set<number>
}

/** One run of the property: a master, its store, 2-3 replicas, and the model. */
class Run {
  readonly master: string
  readonly store: string
  readonly copiesDir: string
  /** The master's tree at each published snapshot id: the model. */
  readonly copies = new Map<number, string>()
  readonly pruned = new Set<number>()
  readonly trace: string[] = []
  readonly replicas: Replica[]
  latest = 0
  from: string

  constructor(
    readonly dir: string,
    replicas: number,
  ) {
    this.master = join(dir, 'master')
    this.store = join(dir, 'store')
    this.copiesDir = join(dir, 'model')
    this.from = this.store
    mkdirSync(this.store)
    mkdirSync(this.copiesDir)
    // The second replica keeps three trees: more instant rollbacks, longer replays.
    this.replicas = Array.from({ length: replicas }, (_, i) => ({ name: `r${i}`, target: join(dir, `r${i}`), trees: i === 1 ? 3 : 2, live: null, pinned: false, seen: new Set<number>() }))
  }

  fail(message: string): never {
    const kept = KEEP_FAILED ? `\n--- kept for inspection: ${this.dir}` : ''
    throw new Error(`${message}\n--- the run so far:\n  ${this.trace.join('\n  ')}${kept}`)
  }

  async cli(args: string[]): Promise<CliResult> {
    stats.commands++
    return runCli([...args, '--json', '--quiet'], { timeoutMs: COMMAND_TIMEOUT_MS })
  }

  expectCode(r: CliResult, codes: number[], what: string): void {
    if (!codes.includes(r.code)) this.fail(`${what}: exit ${r.code}, expected ${codes.join(' or ')}\n${r.stderr}`)
  }

  json<T>(r: CliResult, what: string): T {
    try {
      return JSON.parse(r.stdout) as T
    } catch {
      return this.fail(`${what}: stdout is not JSON: ${JSON.stringify(r.stdout)}\n${r.stderr}`)
    }
  }

  /** The replica's live tree, through its symlink, must be snapshot `id`'s, exactly. */
  expectTree(rep: Replica, id: number | null, what: string): void {
    stats.treesCompared++
    if (id === null) {
      if (lstatSync(rep.target, { throwIfNoEntry: false })) this.fail(`${what}: ${rep.name} should serve nothing yet, but ${rep.target} exists`)
      return
    }
    if (!lstatSync(rep.target).isSymbolicLink()) this.fail(`${what}: ${rep.target} is not a symlink`)
    const diff = treeDiff(this.copies.get(id)!, rep.target)
    if (diff.length > 0) this.fail(`${what}: ${rep.name} differs from snapshot ${id}:\n  ${diff.slice(0, 20).join('\n  ')}`)
    // No more trees than --trees, whatever the history.
    const slots = Array.from({ length: rep.trees }, (_, i) => String.fromCharCode(97 + i))
    const extra = readdirSync(join(this.stateDir(rep), 'trees')).filter((t) => !slots.includes(t))
    if (extra.length > 0) this.fail(`${what}: ${rep.name} keeps ${JSON.stringify(extra)} beside its ${rep.trees} trees`)
  }

  stateDir(rep: Replica): string {
    return join(this.dir, `.${rep.name}.snapshot`)
  }

  replicaArgs(rep: Replica): string[] {
    return ['--target', rep.target, '--pubkey', join(keys, 'snapshot.pub'), '--trees', String(rep.trees)]
  }

  snapshotModel(id: number): void {
    const copy = join(this.copiesDir, String(id))
    const r = spawnSync('cp', ['-a', '--', this.master, copy], { timeout: COMMAND_TIMEOUT_MS })
    if (r.status !== 0) throw new Error(`cp -a: ${r.stderr?.toString() ?? r.error?.message}`)
    const diff = treeDiff(this.master, copy)
    if (diff.length > 0) throw new Error(`cp -a did not copy the master faithfully: ${diff.join('; ')}`)
    this.copies.set(id, copy)
  }

  async build(full: boolean): Promise<void> {
    const before = this.latest
    const r = await this.cli(['build', '--source', this.master, '--store', this.store, '--key', join(keys, 'snapshot.key'), ...(full ? ['--full'] : [])])
    this.expectCode(r, [0], `build${full ? ' --full' : ''}`)
    const b = this.json<{ created: boolean; id: number; kind: string; changed: number; deleted: number; warnings: unknown[] }>(r, 'build')
    if (b.warnings.length > 0) this.fail(`build skipped something of a publishable tree: ${JSON.stringify(b.warnings)}`)
    const changes = before === 0 ? ['(first build)'] : treeDiff(this.copies.get(before)!, this.master)
    if (b.created) {
      if (b.id <= before) this.fail(`build made snapshot ${b.id}, not above the latest ${before}`)
      if (changes.length === 0 && !full) this.fail(`build made snapshot ${b.id} although the tree equals the latest snapshot ${before}`)
      this.snapshotModel(b.id)
      this.latest = b.id
      this.trace.push(`build${full ? ' --full' : ''} -> snapshot ${b.id} (${b.kind}, ${b.changed} changed, ${b.deleted} deleted)`)
    } else {
      if (changes.length > 0) this.fail(`build said "unchanged", but the tree differs from the latest snapshot ${before}:\n  ${changes.slice(0, 20).join('\n  ')}`)
      if (b.id !== before) this.fail(`an unchanged build reports snapshot ${b.id}, the latest is ${before}`)
      this.trace.push(`build${full ? ' --full' : ''} -> unchanged (${b.id})`)
    }
  }

  /** Share of the live snapshot's entries that are gone in the latest one, as the model sees it. */
  deletedShare(from: number): number {
    const a = describeTree(this.copies.get(from)!)
    const b = describeTree(this.copies.get(this.latest)!)
    let gone = 0
    for (const p of a.keys()) if (!b.has(p)) gone++
    return a.size === 0 ? 0 : gone / a.size
  }

  async pull(rep: Replica, mode: PullMode, unpin: boolean, what = `pull ${rep.name} (${mode}${unpin ? ', --unpin' : ''})`): Promise<void> {
    stats.pulls++
    const args = ['pull', '--from', this.from, ...this.replicaArgs(rep), '--retries', '1', '--timeout', '10']
    if (mode !== 'stage') args.push('--swap')
    if (mode === 'force') args.push('--force')
    if (mode === 'max-delete') args.push('--max-delete', '100')
    if (unpin) args.push('--unpin')
    const wasLive = rep.live
    const r = await this.cli(args)

    if (rep.pinned && !unpin) {
      this.expectCode(r, [0], what)
      const p = this.json<{ action: string; id: number }>(r, what)
      if (p.action !== 'pinned' || p.id !== rep.live) this.fail(`${what}: a pinned replica at ${rep.live} answered ${p.action} ${p.id}`)
      this.expectTree(rep, rep.live, `${what}, pinned`)
      this.trace.push(`${what} -> pinned at ${rep.live}, unmoved`)
      return
    }
    const due = mode === 'guarded' && (!rep.pinned || unpin) && wasLive !== null && wasLive !== this.latest && this.deletedShare(wasLive) > 0.25
    if (due) stats.guardDue++
    if (mode === 'guarded' && r.code === 14) {
      stats.guardTrips++
      if (wasLive === null || wasLive === this.latest) this.fail(`${what}: the guard tripped on a replica at ${wasLive}, the latest is ${this.latest}`)
      this.expectTree(rep, wasLive, `${what}, refused by the guard`)
      if (unpin) rep.pinned = await this.isPinned(rep)
      this.trace.push(`${what} -> exit 14 (guard), still serving ${wasLive}${rep.pinned ? ', still pinned' : ''}`)
      return
    }
    this.expectCode(r, [0], what)
    rep.pinned = false
    const p = this.json<{ action: string; id: number }>(r, what)
    if (p.id !== this.latest) this.fail(`${what}: reports snapshot ${p.id}, the store's latest is ${this.latest}`)
    const upToDate = wasLive === this.latest
    if (mode === 'stage') {
      if (p.action !== (upToDate ? 'up-to-date' : 'staged')) this.fail(`${what}: action ${p.action} for a replica at ${wasLive}, latest ${this.latest}`)
      this.expectTree(rep, wasLive, `${what}: staging must not change the live tree`)
      if (!upToDate) {
        const s = await this.cli(['swap', '--target', rep.target, '--trees', String(rep.trees)])
        this.expectCode(s, [0], `swap ${rep.name}`)
      }
    } else {
      if (p.action !== (upToDate ? 'up-to-date' : 'swapped')) this.fail(`${what}: action ${p.action} for a replica at ${wasLive}, latest ${this.latest}`)
      if (due) {
        this.fail(`${what}: swapped from ${wasLive} to ${this.latest} without --force although ${Math.round(100 * this.deletedShare(wasLive))}% of the live entries are gone (guard: 20%)`)
      }
    }
    this.expectTree(rep, this.latest, what)
    // A pull empties the trash of recycled trees before it exits. (A rollback that rebuilds
    // leaves its trash to the next pull: not checked.)
    if (lstatSync(join(this.stateDir(rep), 'trash'), { throwIfNoEntry: false })) this.fail(`${what}: ${rep.name} left its trash directory behind`)
    rep.live = this.latest
    rep.seen.add(this.latest)
    this.trace.push(`${what} -> ${upToDate ? 'up to date' : mode === 'stage' ? 'staged, swap' : 'swapped'} at ${this.latest}, equal`)
  }

  async isPinned(rep: Replica): Promise<boolean> {
    const r = await this.cli(['status', ...this.replicaArgs(rep)])
    this.expectCode(r, [0], `status ${rep.name}`)
    return this.json<{ pinned: unknown }>(r, 'status').pinned !== null
  }

  async rollback(rep: Replica, toPick: number | null): Promise<void> {
    const live = rep.live
    if (live === null) return this.fail(`rollback ${rep.name}: it serves nothing, the scenario should not ask`)
    let to: number | undefined
    if (toPick !== null) {
      const older = [...this.copies.keys()].filter((id) => id < live)
      if (older.length === 0) return void this.trace.push(`rollback ${rep.name} --to: nothing older than ${live}, skipped`)
      to = older[toPick % older.length]!
    }
    const what = `rollback ${rep.name}${to !== undefined ? ` --to ${to} --from store` : ''}`
    const r = await this.cli(['rollback', ...this.replicaArgs(rep), ...(to !== undefined ? ['--to', String(to), '--from', this.from] : [])])
    if (r.code === 10) {
      // No older tree kept (default), or the store pruned it and no tree keeps it (--to).
      if (to !== undefined && !this.pruned.has(to)) this.fail(`${what}: exit 10 although the store still has snapshot ${to}\n${r.stderr}`)
      this.expectTree(rep, live, `${what}, refused`)
      return void this.trace.push(`${what} -> exit 10 (${to === undefined ? 'no older tree kept' : 'pruned'}), still at ${live}`)
    }
    this.expectCode(r, [0], what)
    const rb = this.json<{ from: number; to: number; instant: boolean }>(r, what)
    if (rb.from !== live) this.fail(`${what}: rolled back from ${rb.from}, the replica served ${live}`)
    if (to !== undefined ? rb.to !== to : !(rb.to < live && rep.seen.has(rb.to))) this.fail(`${what}: went to ${rb.to} (live was ${live}, served before: ${[...rep.seen].join(',')})`)
    this.expectTree(rep, rb.to, what)
    rep.live = rb.to
    rep.pinned = true
    this.trace.push(`${what} -> at ${rb.to} (${rb.instant ? 'instant' : 'rebuilt'}), pinned, equal`)
  }

  async unpin(rep: Replica): Promise<void> {
    const r = await this.cli(['unpin', ...this.replicaArgs(rep)])
    this.expectCode(r, [0], `unpin ${rep.name}`)
    const u = this.json<{ wasPinned: number | null }>(r, 'unpin')
    const expected = rep.pinned ? rep.live : null
    if (u.wasPinned !== expected) this.fail(`unpin ${rep.name}: was pinned at ${u.wasPinned}, the model says ${expected}`)
    rep.pinned = false
    this.expectTree(rep, rep.live, `unpin ${rep.name}`)
    this.trace.push(`unpin ${rep.name} -> was ${expected === null ? 'not pinned' : `pinned at ${expected}`}`)
  }

  async fleetRollback(pick: number): Promise<void> {
    const ids = [...this.copies.keys()]
    const to = ids[pick % ids.length]!
    const what = `fleet rollback --to ${to}`
    const r = await this.cli(['rollback', '--store', this.store, '--to', String(to), '--key', join(keys, 'snapshot.key')])
    if (this.pruned.has(to)) {
      this.expectCode(r, [10], `${what} (pruned)`)
      return void this.trace.push(`${what} -> exit 10 (pruned)`)
    }
    this.expectCode(r, [0], what)
    const f = this.json<{ created: boolean; id: number; warnings: unknown[] }>(r, what)
    const same = treeDiff(this.copies.get(to)!, this.copies.get(this.latest)!).length === 0
    if (f.created === same) this.fail(`${what}: created=${f.created}, but snapshot ${to}'s tree ${same ? 'equals' : 'differs from'} the latest ${this.latest}'s`)
    if (!f.created) return void this.trace.push(`${what} -> nothing to publish (latest ${this.latest} has that tree)`)
    if (f.id <= this.latest || f.warnings.length > 0) this.fail(`${what}: published ${f.id} over ${this.latest}, warnings ${JSON.stringify(f.warnings)}`)
    this.copies.set(f.id, this.copies.get(to)!)
    this.latest = f.id
    this.trace.push(`${what} -> snapshot ${f.id} with the tree of ${to}`)
  }

  async prune(keep: number): Promise<void> {
    const r = await this.cli(['prune', '--store', this.store, '--keep', String(keep), '--grace', '0'])
    this.expectCode(r, [0], `prune --keep ${keep}`)
    const p = this.json<{ removed: { snapshots: number[] } }>(r, 'prune')
    const mustKeep = [...this.copies.keys()].sort((a, b) => b - a).slice(0, keep)
    const wrong = p.removed.snapshots.filter((id) => mustKeep.includes(id))
    if (wrong.length > 0) this.fail(`prune --keep ${keep} removed ${wrong.join(',')}, among the ${keep} most recent`)
    for (const id of p.removed.snapshots) this.pruned.add(id)
    this.trace.push(`prune --keep ${keep} --grace 0 -> removed [${p.removed.snapshots.join(',')}]`)
  }

  async verifyStore(): Promise<void> {
    const r = await this.cli(['verify', '--store', this.store, '--pubkey', join(keys, 'snapshot.pub')])
    this.expectCode(r, [0], 'verify --store')
    this.trace.push('verify --store -> clean')
  }
}

async function runScenario(s: Scenario): Promise<void> {
  const started = Date.now()
  stats.runs++
  if (s.http) stats.httpRuns++
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-prop-'))
  const run = new Run(dir, s.replicas)
  let server: Awaited<ReturnType<typeof startServe>> | null = null
  let passed = false
  try {
    materialize(run.master, s.tree)
    run.trace.push(`initial tree: ${describeTree(run.master).size} entries; ${s.replicas} replicas; ${s.http ? 'over snapshot serve' : 'from the store directory'}`)
    if (s.http) {
      server = await startServe(run.store)
      run.from = server.url
    }
    await run.build(false)
    for (const op of s.ops) {
      count(op.op)
      // Rollback and unpin go to a replica that serves something: the others have nothing to undo.
      const candidates = op.op === 'rollback' || op.op === 'unpin' ? run.replicas.filter((r) => r.live !== null) : run.replicas
      const rep = 'replica' in op && candidates.length > 0 ? candidates[op.replica % candidates.length]! : null
      if ('replica' in op && !rep) {
        run.trace.push(`${op.op}: no replica serves anything yet, skipped`)
        continue
      }
      switch (op.op) {
        case 'mutate':
        case 'mutate-build':
          for (const m of op.muts) {
            const done = applyMutation(run.master, m)
            if (done) {
              stats.mutations++
              run.trace.push(`master: ${done}`)
            }
          }
          if (op.op === 'mutate-build') await run.build(op.full)
          break
        case 'build':
          await run.build(op.full)
          break
        case 'pull':
          await run.pull(rep!, op.mode, op.unpin)
          break
        case 'rollback':
          await run.rollback(rep!, op.to)
          break
        case 'unpin':
          await run.unpin(rep!)
          break
        case 'fleet-rollback':
          await run.fleetRollback(op.to)
          break
        case 'prune':
          await run.prune(op.keep)
          break
        case 'verify-store':
          await run.verifyStore()
          break
      }
    }
    // Replicas that skipped pulls, or sit pinned, catch up at the end, all at once.
    const behind = run.replicas.filter((r) => r.pinned || r.live !== run.latest)
    const settled = await Promise.allSettled(behind.map((r) => run.pull(r, 'force', true, `catch-up pull ${r.name} (--force --unpin)`)))
    for (const s of settled) if (s.status === 'rejected') throw s.reason
    passed = true
  } finally {
    await server?.stop()
    if (passed || !KEEP_FAILED) rmSync(dir, { recursive: true, force: true })
    stats.seconds += (Date.now() - started) / 1000
  }
}

test('after every pull a replica equals the master snapshot it reports (random trees and operations)', { timeout: TIME_LIMIT_MS + 60_000 }, async (t) => {
  let inflight: Promise<unknown> = Promise.resolve()
  const details = await fc.check(
    fc.asyncProperty(scenarioArb, (s) => {
      const p = runScenario(s)
      inflight = p.catch(() => undefined)
      return p
    }),
    { seed: SEED, numRuns: RUNS, includeErrorInReport: true, ...(REPLAY_PATH ? { path: REPLAY_PATH } : {}), plugins: [fc.interruptAfterTimeLimit(TIME_LIMIT_MS)] },
  )
  await inflight // an interrupted run still owns its directory and child processes
  t.diagnostic(`seed ${details.seed}: ${details.numRuns} runs${details.interrupted ? ' (stopped by the time limit)' : ''}, ${details.numShrinks} shrinks`)
  t.diagnostic(`${stats.runs} scenarios (${stats.httpRuns} over HTTP) in ${stats.seconds.toFixed(1)} s: ${stats.commands} CLI commands, ${stats.mutations} master edits, ${stats.pulls} pulls, ${stats.treesCompared} tree comparisons, ${stats.guardTrips} guard refusals (${stats.guardDue} due)`)
  t.diagnostic(`operations: ${JSON.stringify(stats.ops)}`)
  if (details.failed) {
    const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)
    throw new Error(`${fc.defaultReportMessage(details)}\n--- the failure of the last (smallest) counterexample:\n${cause}`)
  }
})
