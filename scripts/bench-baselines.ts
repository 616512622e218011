/**
 * What the tools a user would pick instead of ours cost on the same corpus, in the same run:
 * GNU tar + zstd (full archives, and --listed-incremental deltas applied onto the old tree) and
 * rsync (initial copy, one replica, N replicas at once).
 *
 * Two phases around the caller's mutation of the corpus:
 *   prepareBaselines       before: full archive and its extraction, tar level 0, initial rsync,
 *                          and the old-tree copies the delta steps start from (untimed);
 *   measureDeltaBaselines  after: tar level 1 and its application, rsync to 1 and to N replicas,
 *                          and tar's level 1 applied onto the N replicas at once (the floor).
 * runBaselines does both with a mutation in between.
 *
 * Copies of the old tree. A hard-linked clone of the corpus (`cp -al`) would be cheap, but the
 * corpus mutation rewrites most changed files in place, which would change the clone's files too
 * (the same inode) and leave rsync nothing to send; GNU tar's incremental extraction also sets
 * metadata through existing inodes. So no old tree shares an inode with the corpus: the full
 * extraction's output serves as the old tree for the tar level-1 application, the initial rsync's
 * output as the one-replica rsync target (both exact copies made before the mutation, which saves
 * two copies), and `cp -a` copies serve the N-replica run. With copies 'real' (the default) those
 * are N copies, N + 2 in all: the space check refuses to start without room. With copies 'linked'
 * replicas 2..N are `cp -al` clones of replica 1: safe for `rsync -aW`, which never writes into an
 * existing file (it writes a new one and renames it, and only unlinks to delete), and ~N times
 * cheaper in space, set-up and removal (1M real files take minutes to remove); but the replicas then
 * share inodes in the cache, so the N-replica step reads destination metadata once rather than N
 * times, which flatters rsync a little. Rows made that way say so.
 *
 * Page cache (BENCHMARKS.md, "Facts the code's comments rely on": this machine evicts what nobody
 * touched for about a minute). With
 * cache 'warm' (the default) every timed step is preceded by an untimed pass over what it reads:
 * the data of its source tree or archive, and the metadata of its destination trees, read last, in
 * the seconds before the step. 'cold' drops the caches before each step instead (root outside a
 * container only; refused up front when impossible). 'as-is' does neither. Each row says which.
 *
 * ext4 here slows file creation sharply (inode allocation probes recently deleted inodes) for a
 * while after a large `rm -rf`: do not start a run right after removing a big tree.
 */
import { copyFile, mkdir, mkdtemp, readFile, stat } from 'node:fs/promises'
import { cpus, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ExitCode, SnapshotError, UsageError } from '../src/core/errors.js'
import { generateCorpus, mutateCorpus, type CorpusSummary } from './corpus.js'
import { isRunAsMain } from './run-as-main.js'
import {
  BenchError,
  dropCaches,
  ensureTool,
  formatBytes,
  formatMarkdownTable,
  formatTextTable,
  logLine,
  measureCommand,
  flushDirtyPages,
  mustSucceed,
  removeTree,
  removeTrees,
  requireSpace,
  rowFromMeasurement,
  run,
  shellQuote,
  treeDifference,
  treeStats,
  warmTree,
  wholeNumberFlag,
  type BenchRow,
  type Measurement,
  type TreeStats,
} from './bench-lib.js'

export type CacheMode = 'warm' | 'cold' | 'as-is'
export type VerifyMode = 'content' | 'listing' | 'none'
export type CopyMode = 'real' | 'linked'

export interface BaselineOptions {
  corpusDir: string
  /** A directory of its own is made inside for this run (removed by cleanupBaselines). */
  workDir: string
  /** Replicas for the "N at once" rsync run. */
  replicas?: number
  cache?: CacheMode
  /** How each result tree is checked against the corpus; default content up to 200k files. */
  verify?: VerifyMode
  /** How the N replicas are made: N real copies, or one copy and N - 1 hard-linked clones of it. */
  copies?: CopyMode
  /** Where the N replicas' copies go (absent directories, on filesystems of their own, say); by default inside the run's directory. */
  replicaCopies?: string[]
  log?: (line: string) => void
}

/** One timed step. */
export interface BaselineStep {
  key: string
  label: string
  measurement: Measurement
  cache: string
  /** The machine's 1-minute load average when the step ended: context for noisy figures. */
  loadAverage: number
  /** Archive size, where there is an archive. */
  archiveBytes?: number
  /** Bytes sent to one replica: the archive, or rsync's "bytes sent + received". */
  transferredBytes?: number
}

export interface PreparedBaselines {
  options: Required<Omit<BaselineOptions, 'log'>> & { log: (line: string) => void }
  runDir: string
  paths: BaselinePaths
  corpusBefore: TreeStats
  steps: BaselineStep[]
}

export interface BaselineResults {
  corpusBefore: TreeStats
  corpusAfter: TreeStats
  replicas: number
  cache: CacheMode
  copies: CopyMode
  steps: BaselineStep[]
  rows: BenchRow[]
}

export interface BaselinePaths {
  fullArchive: string
  level0Archive: string
  level1Archive: string
  snap0: string
  snap1: string
  /** Full extraction output, later the target of the level-1 application. */
  tarTree: string
  /** Initial rsync output, later the one-replica target. */
  rsyncOne: string
  rsyncMany: string[]
  statsDir: string
}

const q = shellQuote

/** Before the mutation: full-tree measures, tar level 0, and the old-tree copies. */
export async function prepareBaselines(opts: BaselineOptions): Promise<PreparedBaselines> {
  const log = opts.log ?? logLine
  const corpusDir = resolve(opts.corpusDir)
  const replicas = opts.replicas ?? 10
  if (!Number.isSafeInteger(replicas) || replicas < 1) throw new UsageError(`replicas must be a positive integer, got ${replicas}`)
  const cache = opts.cache ?? 'warm'
  const copyMode = opts.copies ?? 'real'

  await ensureTool('tar', 'tar', log)
  await ensureTool('zstd', 'zstd', log)
  await ensureTool('rsync', 'rsync', log)
  if (cache === 'cold' && !(await dropCaches())) {
    throw new BenchError('cold caches were asked for, but /proc/sys/vm/drop_caches is not writable here: run as root outside a container, or use cache warm')
  }

  log(`baselines: sizing ${corpusDir}`)
  const corpusBefore = await treeStats(corpusDir)
  if (corpusBefore.files === 0) throw new UsageError(`${corpusDir} holds no files`)
  const verify = opts.verify ?? (corpusBefore.files <= 200_000 ? 'content' : 'listing')

  // Real copies of the tree, the directories of linked clones, three archives (each well under
  // the tree's apparent size), a margin.
  await mkdir(opts.workDir, { recursive: true })
  const blocks = corpusBefore.diskBytes
  if (opts.replicaCopies && opts.replicaCopies.length !== replicas) throw new UsageError(`${opts.replicaCopies.length} places for the copies of ${replicas} replicas`)
  if (opts.replicaCopies && copyMode === 'linked') throw new UsageError('hard-linked copies need one filesystem: leave the replicas\' copies in the work directory')
  // Copies placed elsewhere are on filesystems whose maker checked their space.
  const copies = copyMode === 'linked' ? 3 : opts.replicaCopies ? 2 : replicas + 2
  const clones = copyMode === 'real' ? 0 : replicas - 1
  requireSpace(
    opts.workDir,
    {
      bytes: Math.ceil((copies * blocks + clones * corpusBefore.dirs * 4096) * 1.1 + 3 * corpusBefore.bytes + 1024 ** 3),
      inodes: Math.ceil((copies * (corpusBefore.files + corpusBefore.dirs) + clones * corpusBefore.dirs) * 1.05 + 10_000),
    },
    `the baselines (${copies} copies${clones ? ` and ${clones} hard-linked clones` : ''} of a tree of ` +
      `${corpusBefore.files} files, ${formatBytes(blocks)} on disk)`,
    copyMode === 'real' ? 'use fewer replicas, copies linked, or a work directory on a larger filesystem' : 'use a work directory on a larger filesystem',
  )

  const runDir = await mkdtemp(join(resolve(opts.workDir), 'baselines-'))
  const paths: BaselinePaths = {
    fullArchive: join(runDir, 'full.tar.zst'),
    level0Archive: join(runDir, 'level0.tar.zst'),
    level1Archive: join(runDir, 'level1.tar.zst'),
    snap0: join(runDir, 'snap.0'),
    snap1: join(runDir, 'snap.1'),
    tarTree: join(runDir, 'tar-tree'),
    rsyncOne: join(runDir, 'rsync-one'),
    rsyncMany: opts.replicaCopies ?? Array.from({ length: replicas }, (_, i) => join(runDir, 'rsync-many', `r${String(i + 1).padStart(2, '0')}`)),
    statsDir: join(runDir, 'stats'),
  }
  await mkdir(paths.tarTree)
  await mkdir(paths.rsyncOne)
  await mkdir(paths.statsDir)
  if (!opts.replicaCopies) await mkdir(join(runDir, 'rsync-many'))

  const prepared: PreparedBaselines = {
    options: { corpusDir, workDir: resolve(opts.workDir), replicas, cache, verify, copies: copyMode, replicaCopies: paths.rsyncMany, log },
    runDir,
    paths,
    corpusBefore,
    steps: [],
  }
  try {
    const c = q(corpusDir)

    const full = await timedStep(prepared, 'fullCreate', 'tar | zstd -3: full archive', { data: [corpusDir] },
      `tar -C ${c} -cf - . | zstd -3 -T1 -q -o ${q(paths.fullArchive)}`)
    full.archiveBytes = full.transferredBytes = (await stat(paths.fullArchive)).size

    await timedStep(prepared, 'fullExtract', 'zstd -dc | tar x: full, into an empty dir', { data: [paths.fullArchive] },
      `zstd -dc ${q(paths.fullArchive)} | tar -C ${q(paths.tarTree)} -xf -`)
    await check(prepared, corpusDir, paths.tarTree, 'the full extraction')

    const level0 = await timedStep(prepared, 'level0Create', 'tar --listed-incremental level 0 | zstd -3', { data: [corpusDir] },
      `tar --listed-incremental=${q(paths.snap0)} -C ${c} -cf - . | zstd -3 -T1 -q -o ${q(paths.level0Archive)}`)
    level0.archiveBytes = level0.transferredBytes = (await stat(paths.level0Archive)).size

    const initial = await timedStep(prepared, 'rsyncInitial', 'rsync -aW: initial full copy, 1 replica', { data: [corpusDir] },
      `rsync -aW --delete --stats ${c}/ ${q(paths.rsyncOne)}/ > ${q(join(paths.statsDir, 'initial.txt'))}`)
    initial.transferredBytes = await rsyncWireBytes(join(paths.statsDir, 'initial.txt'))
    await check(prepared, corpusDir, paths.rsyncOne, 'the initial rsync')

    if (copyMode === 'linked') {
      const [first, ...rest] = paths.rsyncMany
      log(`baselines: cp -a copy of the old tree for replica 1 of ${replicas} (untimed)`)
      await run(['cp', '-a', corpusDir, first!], `cp -a ${corpusDir} ${first}`)
      for (const [i, dst] of rest.entries()) {
        log(`baselines: cp -al clone of replica 1 for replica ${i + 2} of ${replicas} (untimed)`)
        await run(['cp', '-al', first!, dst], `cp -al ${first} ${dst}`)
      }
    } else {
      // Two copies at a time keep both cores and the disk busy without thrashing.
      for (let i = 0; i < paths.rsyncMany.length; i += 2) {
        const batch = paths.rsyncMany.slice(i, i + 2)
        log(`baselines: cp -a copies of the old tree ${i + 1}-${i + batch.length} of ${replicas} (untimed)`)
        await Promise.all(batch.map((dst) => run(['cp', '-a', corpusDir, dst], `cp -a ${corpusDir} ${dst}`)))
      }
    }
  } catch (err) {
    await cleanupBaselines(prepared).catch(() => undefined) // the error at hand matters more
    throw err
  }
  log('baselines: prepared; mutate the corpus now')
  return prepared
}

/** After the mutation: tar level 1 and its application, rsync to one and to N replicas, tar onto N. */
export async function measureDeltaBaselines(prepared: PreparedBaselines): Promise<BaselineResults> {
  const { options, paths } = prepared
  const { corpusDir, log } = options
  const c = q(corpusDir)
  log(`baselines: sizing the mutated ${corpusDir}`)
  const corpusAfter = await treeStats(corpusDir)

  // Level 1 from a copy of the level-0 state, so snap.0 stays the level-0 record.
  await copyFile(paths.snap0, paths.snap1)
  const level1 = await timedStep(prepared, 'level1Create', 'tar --listed-incremental level 1 | zstd -3', { data: [corpusDir] },
    `tar --listed-incremental=${q(paths.snap1)} -C ${c} -cf - . | zstd -3 -T1 -q -o ${q(paths.level1Archive)}`)
  level1.archiveBytes = level1.transferredBytes = (await stat(paths.level1Archive)).size

  await timedStep(prepared, 'level1Apply', 'zstd -dc | tar --incremental -x: level 1 onto the old tree',
    { data: [paths.level1Archive], metadata: [paths.tarTree] },
    `zstd -dc ${q(paths.level1Archive)} | tar --incremental -C ${q(paths.tarTree)} -xf -`)
  await check(prepared, corpusDir, paths.tarTree, 'the level-1 application')

  const one = await timedStep(prepared, 'rsyncOne', 'rsync -aW --delete: 1 replica', { data: [corpusDir], metadata: [paths.rsyncOne] },
    `rsync -aW --delete --stats ${c}/ ${q(paths.rsyncOne)}/ > ${q(join(paths.statsDir, 'one.txt'))}`)
  one.transferredBytes = await rsyncWireBytes(join(paths.statsDir, 'one.txt'))
  await check(prepared, corpusDir, paths.rsyncOne, 'the one-replica rsync')

  // All N started together; the step ends when the last one does, and fails if any failed.
  const n = paths.rsyncMany.length
  const starts = paths.rsyncMany
    .map((dst, i) => `rsync -aW --delete --stats ${c}/ ${q(dst)}/ > ${q(join(paths.statsDir, `many-${i}.txt`))} & pids="$pids $!"`)
    .join('\n')
  const many = await timedStep(prepared, 'rsyncMany', `rsync -aW --delete: ${n} replicas at once`, { data: [corpusDir], metadata: paths.rsyncMany },
    `pids=\n${starts}\nrc=0\nfor p in $pids; do wait "$p" || rc=$?; done\nexit $rc`)
  let wire = 0
  for (let i = 0; i < n; i++) wire += await rsyncWireBytes(join(paths.statsDir, `many-${i}.txt`))
  many.transferredBytes = Math.round(wire / n)
  for (const [i, dst] of paths.rsyncMany.entries()) {
    // Every replica by listing; the first also by content when asked for.
    await check(prepared, corpusDir, dst, `the ${n}-replica rsync (replica ${i + 1})`, i === 0 ? undefined : 'listing')
  }

  // The floor under our N-replica row: GNU tar applies the same level-1 archive onto the N
  // replicas at once, then one sync (our pulls flush their tree before they swap). The replicas
  // already hold the new tree, which changes little: tar unlinks and recreates every file in the
  // archive all the same, and only the hour's deletions find nothing left to delete.
  const applies = paths.rsyncMany
    .map((dst) => `(zstd -dc ${q(paths.level1Archive)} | tar --incremental -C ${q(dst)} -xf -) & pids="$pids $!"`)
    .join('\n')
  const applyMany = await timedStep(prepared, 'level1ApplyMany', `zstd -dc | tar --incremental -x: level 1 onto ${n} replicas at once, then sync`,
    { data: [paths.level1Archive], metadata: paths.rsyncMany },
    `pids=\n${applies}\nrc=0\nfor p in $pids; do wait "$p" || rc=$?; done\nsync\nexit $rc`)
  applyMany.transferredBytes = level1.archiveBytes
  await check(prepared, corpusDir, paths.rsyncMany[0]!, `the level-1 application onto ${n} replicas (replica 1)`, 'listing')

  return {
    corpusBefore: prepared.corpusBefore,
    corpusAfter,
    replicas: n,
    cache: options.cache,
    copies: options.copies,
    steps: prepared.steps,
    rows: baselineRows(prepared.steps, prepared.corpusBefore, n, options.copies),
  }
}

/** Both phases, with `mutate` (by default one hour of mutateCorpus) in between. */
export async function runBaselines(
  opts: BaselineOptions & { mutate?: () => Promise<unknown>; keep?: boolean },
): Promise<BaselineResults> {
  const prepared = await prepareBaselines(opts)
  try {
    prepared.options.log('baselines: mutating the corpus')
    await (opts.mutate ?? (() => mutateCorpus({ out: prepared.options.corpusDir })))()
    return await measureDeltaBaselines(prepared)
  } finally {
    if (!opts.keep) await cleanupBaselines(prepared)
  }
}

/** Removes everything the run made (the corpus is the caller's), and `alsoRemove` alongside. */
export async function cleanupBaselines(prepared: PreparedBaselines, alsoRemove: readonly string[] = []): Promise<void> {
  prepared.options.log(`baselines: removing ${prepared.runDir}`)
  const { tarTree, rsyncOne, rsyncMany } = prepared.paths
  await removeTrees([...alsoRemove, tarTree, rsyncOne, ...rsyncMany])
  await removeTree(prepared.runDir)
}

/** The table rows; ratio = bytes sent to one replica / apparent bytes of the tree before. */
export function baselineRows(steps: readonly BaselineStep[], corpus: TreeStats, replicas: number, copies: CopyMode = 'real'): BenchRow[] {
  return steps.map((s) => {
    const rss = s.measurement
    const pssNote =
      rss.sampledTreePssBytes > 0 && rss.sampledTreePssBytes < 0.8 * rss.peakRssBytes
        ? `, PSS ${(rss.sampledTreePssBytes / 1048576).toFixed(1)} MiB`
        : ''
    const many = s.key === 'rsyncMany' || s.key === 'level1ApplyMany' ? `, sent x${replicas}${copies === 'linked' ? ', replicas hard-linked to each other' : ''}` : ''
    return rowFromMeasurement(s.label, s.measurement, {
      storeBytes: s.archiveBytes,
      transferredBytes: s.transferredBytes,
      ratio: s.transferredBytes === undefined ? undefined : s.transferredBytes / corpus.bytes,
      notes: `${s.cache}, load ${s.loadAverage.toFixed(1)}${pssNote}${many}`,
    })
  })
}

// ---------------------------------------------------------------------------------------------

interface Reads {
  /** Trees or files whose data the step reads. */
  data?: string[]
  /** Trees whose metadata the step reads (destinations). */
  metadata?: string[]
}

async function timedStep(prepared: PreparedBaselines, key: string, label: string, reads: Reads, script: string): Promise<BaselineStep> {
  const { log, cache } = prepared.options
  const state = await settleCache(cache, reads, log)
  log(`baselines: ${label} (${state})`)
  await flushDirtyPages()
  const m = mustSucceed(await measureCommand({ shell: script }), label)
  log(`baselines:   ${m.seconds.toFixed(2)} s, peak RSS ${(m.peakRssBytes / 1048576).toFixed(1)} MiB`)
  const step: BaselineStep = { key, label, measurement: m, cache: state, loadAverage: loadavg()[0] ?? 0 }
  prepared.steps.push(step)
  return step
}

async function settleCache(mode: CacheMode, reads: Reads, log: (line: string) => void): Promise<string> {
  if (mode === 'as-is') return 'as-is'
  if (mode === 'cold') {
    if (!(await dropCaches())) throw new BenchError('could not drop the page cache')
    return 'cold'
  }
  // Destinations first, the source last: what the step reads first is the freshest.
  for (const dir of reads.metadata ?? []) await warmTree(dir, 'metadata')
  for (const path of reads.data ?? []) await warmTree(path, 'data')
  log(`baselines:   warmed ${[...(reads.metadata ?? []), ...(reads.data ?? [])].length} path(s)`)
  return 'warm'
}

async function check(prepared: PreparedBaselines, expected: string, actual: string, what: string, depth?: 'listing'): Promise<void> {
  const mode = depth ?? prepared.options.verify
  if (mode === 'none') return
  const problem = await treeDifference(expected, actual, mode)
  if (problem) throw new BenchError(`${what} did not reproduce the corpus: ${problem}`)
}

/** rsync --stats: "Total bytes sent" + "Total bytes received", what would cross the network. */
async function rsyncWireBytes(statsFile: string): Promise<number> {
  const text = await readFile(statsFile, 'utf8')
  const field = (name: string): number => {
    const m = new RegExp(`${name}: ([\\d,.]+)`).exec(text)
    if (!m) throw new BenchError(`no '${name}' in the rsync statistics ${statsFile}`)
    return Number(m[1]!.replace(/[,.]/g, ''))
  }
  return field('Total bytes sent') + field('Total bytes received')
}

// ---------------------------------------------------------------------------------------------
// CLI: node dist/scripts/bench-baselines.js --files N [--replicas 10] [--work-dir ./.bench] ...

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      files: { type: 'string' },
      replicas: { type: 'string', default: '10' },
      'work-dir': { type: 'string', default: './.bench' },
      seed: { type: 'string', default: '1' },
      cache: { type: 'string', default: 'warm' },
      verify: { type: 'string' },
      copies: { type: 'string', default: 'real' },
      keep: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(
      'usage: bench-baselines --files N [--replicas 10] [--work-dir ./.bench] [--seed 1]\n' +
        '                       [--cache warm|cold|as-is] [--verify content|listing|none]\n' +
        '                       [--copies real|linked] [--keep] [--json]\n',
    )
    return
  }
  const files = wholeNumberFlag('--files', values.files, 1)
  const replicas = wholeNumberFlag('--replicas', values.replicas, 1)
  const cache = values.cache as CacheMode
  if (!['warm', 'cold', 'as-is'].includes(cache)) throw new UsageError(`--cache must be warm, cold or as-is, got ${values.cache}`)
  const verify = values.verify as VerifyMode | undefined
  if (verify !== undefined && !['content', 'listing', 'none'].includes(verify)) {
    throw new UsageError(`--verify must be content, listing or none, got ${values.verify}`)
  }

  const copies = values.copies as CopyMode
  if (!['real', 'linked'].includes(copies)) throw new UsageError(`--copies must be real or linked, got ${values.copies}`)

  const workDir = resolve(values['work-dir'])
  await mkdir(workDir, { recursive: true })
  const top = await mkdtemp(join(workDir, 'run-'))
  const corpusDir = join(top, 'corpus')
  let mutation: CorpusSummary | undefined
  let prepared: PreparedBaselines | undefined
  try {
    logLine(`corpus: generating ${files} files in ${corpusDir}`)
    const generated = await generateCorpus({ files, out: corpusDir, seed: values.seed })
    logLine(`corpus: ${JSON.stringify(generated)}`)
    // The phases one by one rather than runBaselines, so the table comes out before the (slow)
    // removal of the trees, which the removal of `top` below covers.
    prepared = await prepareBaselines({ corpusDir, workDir: top, replicas, cache, verify, copies })
    logLine('corpus: mutating')
    mutation = await mutateCorpus({ out: corpusDir, seed: values.seed })
    logLine(`corpus: mutated ${JSON.stringify(mutation)}`)
    const results = await measureDeltaBaselines(prepared)
    const caption =
      `Baselines on ${results.corpusBefore.files.toLocaleString('en-US')} files ` +
      `(${formatBytes(results.corpusBefore.bytes)} apparent, ${results.corpusBefore.dirs} dirs); ` +
      `one hour of change: ${mutation?.modified} modified, ${mutation?.deleted} deleted, ${mutation?.added} added; ` +
      `cache ${cache}; replicas: ${copies === 'real' ? 'real copies' : 'hard-linked clones'}; ${cpus().length} CPUs; ` +
      'ratio = sent per replica / tree bytes.'
    if (values.json) {
      process.stdout.write(JSON.stringify({ generated, mutation, ...results }) + '\n')
    } else {
      process.stdout.write(`${caption}\n\n${formatTextTable(results.rows)}\n${formatMarkdownTable(results.rows)}`)
    }
  } finally {
    if (values.keep) logLine(`kept ${top}`)
    else {
      logLine(`removing ${top}`)
      if (prepared) await cleanupBaselines(prepared, [corpusDir])
      await removeTree(top)
    }
  }
}

if (isRunAsMain(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    const code = err instanceof SnapshotError ? err.exitCode : (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? ExitCode.Usage : ExitCode.Failure
    process.stderr.write(`bench-baselines: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = code
  })
}
