import type { KeyObject } from 'node:crypto'
import { lstat, mkdir, readdir, realpath, rm, stat } from 'node:fs/promises'
import { basename, dirname, join, resolve, sep } from 'node:path'
import { asSnapshotError, IndexVersionError, SkippedEntriesError, SourceChangedError, UsageError, VerifyError } from '../core/errors.js'
import { releaseMemory } from '../core/release-memory.js'
import { decideFull, type FullPolicy } from '../core/full-policy.js'
import { POINTER_FORMAT, sealEnvelope } from '../core/pointer.js'
import type { ArchivePair, SnapshotRecord } from '../core/snapshot-record.js'
import { TreeDigest } from '../core/tree-digest.js'
import type { RootMeta } from '../core/tree-entry.js'
import { rootMeta } from '../fs/tree-scan.js'
import { writeFileAtomic } from '../fs/durable.js'
import { acquireLock } from '../fs/lock-file.js'
import { StoreLayout } from '../store/store-layout.js'
import { writeArchivePair } from './archive-writer.js'
import { byPath, fileChanged, PREVIOUS_SAME, PREVIOUS_UNKNOWN, readIntoIndex, scanMetadata, scanWholeTree, type SkipLog, type SkipSummary } from './build-scan.js'
import { writeFirstFull, writeFullFromIndex } from './full-archive.js'
import { SourceReader } from './source-reader.js'
import { ReadAhead, type ReadJob } from './read-ahead.js'
import type { FilesToRead } from './files-to-read.js'
import type { TreeCounts } from './index-row.js'
import { readIndex, type IndexRows } from './index-rows.js'
import { DEFAULT_GRACE_SECONDS, pruneLocked, ROLLBACK_WORK_PREFIX, type PruneResult } from './prune.js'
import { StoreClient } from '../store/store-client.js'

/**
 * One build: scan the source, pack what changed since the latest snapshot, and publish. Publication
 * order is what keeps the store valid after a crash at any point: objects, then the snapshot's
 * record, then the master's index, and last the pointer. Until the pointer moves, everything new
 * is unreferenced and harmless.
 *
 * Over ~350 lines on purpose: it is that publication order, read top to bottom in one place
 * (the scan is build-scan.ts, the index master-index.ts, the archives full-archive.ts).
 */
export interface BuildOptions {
  readonly source: string
  readonly store: string
  readonly privateKey: KeyObject | null
  readonly forceFull: boolean
  readonly policy: FullPolicy
  readonly now?: () => Date
  readonly log?: (line: string) => void
  /** After publishing, prune down to this many snapshots (prune.ts); absent: keep everything. */
  readonly keep?: number
  readonly graceMs?: number
  /** How long to wait for another build, prune or rollback holding the store's lock. */
  readonly lockWaitMs?: number
  /** Fleet rollback: the snapshot whose tree this one republishes, recorded in the record. */
  readonly rollbackOf?: number
  /** Refuse to publish a tree whose digest is not this one (fleet rollback checks its rebuild). */
  readonly expectTreeDigest?: string
  /** Any entry skipped (vanished, special, a name or link a replica would refuse) fails the build, unpublished. */
  readonly strict?: boolean
  /** Threads reading a full archive's small files (read-ahead.ts); the default when not given. */
  readonly readerThreads?: number
  /** find processes walking the source at once (tree-scan.ts); the default when not given. */
  readonly scanProcesses?: number
}

/** The master's clock read earlier than the parent's build time: the new snapshot looks older than its parent. */
export interface ClockWentBack {
  readonly parent: number
  readonly parentCreated: string
  readonly created: string
  readonly seconds: number
}

export interface BuildResult {
  readonly created: boolean
  readonly id: number
  readonly kind: 'full' | 'delta'
  readonly parent: number | null
  readonly fullReason: string | null
  readonly files: number
  readonly dirs: number
  readonly links: number
  readonly bytes: number
  readonly changed: number
  readonly deleted: number
  readonly filesRead: number
  readonly deltaBytes: number | null
  readonly fullBytes: number | null
  readonly warnings: readonly string[]
  /** Entries left out of the snapshot, by reason (build-scan.ts SkipReason). */
  readonly skipped: SkipSummary
  /** Entries carried without their setuid or setgid bits. */
  readonly setIdDropped: number
  /** Set when this build's time is earlier than its parent's (a clock that went backwards). */
  readonly clockWentBack: ClockWentBack | null
  /** Temp files that builds which died (kill -9) had left in the store, removed under the lock. */
  readonly deadTemps?: { readonly files: number; readonly bytes: number }
  readonly seconds: number
  readonly rollbackOf?: number
  /** With `keep`: what the automatic prune removed. */
  readonly pruned?: PruneResult
}

/** Builds under the store's lock, so two builds (or a build and a prune) never run at once. */
export async function buildSnapshot(opts: BuildOptions): Promise<BuildResult> {
  const layout = new StoreLayout(opts.store)
  await requireSourceDir(opts.source)
  await requireStoreApart(opts.source, opts.store)
  await mkdir(layout.stateDir, { recursive: true })
  const lock = await acquireLock(layout.lock, `store ${opts.store}`, { waitMs: opts.lockWaitMs ?? 0 })
  try {
    const deadTemps = await removeDeadBuildTemps(layout, opts.log ?? (() => undefined))
    const result = { ...(await buildLocked(opts)), ...(deadTemps.files > 0 ? { deadTemps } : {}) }
    if (opts.keep === undefined) return result
    const pruned = await pruneLocked(layout, { keep: opts.keep, graceMs: opts.graceMs ?? DEFAULT_GRACE_SECONDS * 1000, ...(opts.now ? { now: opts.now } : {}), ...(opts.log ? { log: opts.log } : {}) })
    return { ...result, pruned }
  } finally {
    lock.release()
  }
}

async function requireSourceDir(source: string): Promise<void> {
  const sourceStat = await stat(source).catch(() => null)
  if (!sourceStat?.isDirectory()) throw new UsageError(`--source ${source} is not a directory`)
}

/**
 * A store inside the source would be snapshotted into itself (every build a full, growing each
 * time), and a source inside the store would publish the store's private state: both are refused,
 * by real paths (symlinks and `..` resolved). A store that is a file is refused too.
 */
async function requireStoreApart(source: string, store: string): Promise<void> {
  const storeStat = await stat(store).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOTDIR') throw new UsageError(`--store ${store} is not a directory: a part of its path is a file`)
    return null
  })
  if (storeStat && !storeStat.isDirectory()) throw new UsageError(`--store ${store} is not a directory (it is a file): give the store's directory`)
  const realSource = await realpath(source)
  const realStore = await realpathOfNew(store)
  const inside = (a: string, b: string): boolean => a === b || a.startsWith(b.endsWith(sep) ? b : b + sep)
  if (inside(realStore, realSource)) {
    throw new UsageError(`--store ${store} (${realStore}) is inside --source ${source} (${realSource}): the store would snapshot itself; keep the store outside the source`)
  }
  if (inside(realSource, realStore)) {
    throw new UsageError(`--source ${source} (${realSource}) is inside --store ${store} (${realStore}): the store would publish itself; keep the source outside the store`)
  }
}

/** The real path of a directory that may not exist yet: its nearest existing ancestor's, resolved. */
async function realpathOfNew(path: string): Promise<string> {
  const abs = resolve(path)
  try {
    return await realpath(abs)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(abs) === abs) throw err
    return join(await realpathOfNew(dirname(abs)), basename(abs))
  }
}

/** Temp files of atomic writes (durable.ts tempPathFor: `.${name}.${uuid}.tmp`), as prune.ts knows them. */
const TEMP_NAME = /^\..+\.tmp$/

/**
 * A build killed with kill -9 leaves its temp files behind, the archive's as large as the archive.
 * Under the store's lock no build, prune or fleet rollback is writing, so every temp file a build
 * writes is one that died: removed now, not after prune's grace period, or a crash-looping build
 * fills the disk. Only the names builds and fleet rollbacks write are touched: objects' and
 * records' temps, the pointer's, the index's, rollback work directories (the lock's own temp
 * files, `.build.lock.*`, may be a live rival's).
 */
async function removeDeadBuildTemps(layout: StoreLayout, log: (line: string) => void): Promise<{ files: number; bytes: number }> {
  const dirs: [string, (name: string) => boolean][] = [
    [layout.objectsDir, (n) => TEMP_NAME.test(n)],
    [layout.snapshotsDir, (n) => TEMP_NAME.test(n)],
    [layout.root, (n) => TEMP_NAME.test(n) && n.startsWith('.latest.json.')],
    [layout.stateDir, (n) => (TEMP_NAME.test(n) && n.startsWith('.index-')) || n.startsWith(ROLLBACK_WORK_PREFIX)],
  ]
  let files = 0
  let bytes = 0
  for (const [dir, dead] of dirs) {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (!dead(name)) continue
      const st = await lstat(join(dir, name)).catch(() => null)
      if (!st) continue
      await rm(join(dir, name), { recursive: true, force: true })
      files++
      bytes += st.isFile() ? st.size : 0
    }
  }
  if (files > 0) log(`removed ${files} temp file(s) (${bytes} bytes) left by a build that died`)
  return { files, bytes }
}

/**
 * After the scan and the reads: the skips counted and warned, and under --strict, the build
 * stopped before anything is published.
 */
function settleSkips(skips: SkipLog, warnings: readonly string[], opts: BuildOptions, log: (line: string) => void): SkipSummary {
  const summary = skips.finish()
  for (const w of warnings) log(`warning: ${w}`)
  if (opts.strict && summary.count > 0) {
    const reasons = Object.entries(summary.byReason).sort(([a], [b]) => (a < b ? -1 : 1)).map(([r, n]) => `${r} ${n}`).join(', ')
    throw new SkippedEntriesError(`--strict: ${summary.count} ${summary.count === 1 ? 'entry' : 'entries'} would be left out of the snapshot (${reasons}); nothing was published`)
  }
  return summary
}

/** The clock went backwards when this build's time is before its parent's: said, and returned for --json. */
function checkClock(latest: SnapshotRecord | null, now: Date, log: (line: string) => void): ClockWentBack | null {
  if (!latest) return null
  const seconds = (Date.parse(latest.created) - now.getTime()) / 1000
  if (!(seconds > 0)) return null
  log(`warning: the clock went backwards: this build's time ${now.toISOString()} is ${seconds.toFixed(3)} s before snapshot ${latest.id}'s (${latest.created}); replicas will report clock skew: fix the master's clock (NTP)`)
  return { parent: latest.id, parentCreated: latest.created, created: now.toISOString(), seconds }
}

/** One build; the caller holds the store's lock (fleet rollback holds it across its rebuild). */
export async function buildLocked(opts: BuildOptions): Promise<BuildResult> {
  const opened: { close(): void }[] = [] // the previous index, the early reads' and a first build's rows' files, read until the build ends
  try {
    return await buildWithIndex(opts, opened)
  } finally {
    for (const rows of opened) rows.close()
  }
}

async function buildWithIndex(opts: BuildOptions, opened: { close(): void }[]): Promise<BuildResult> {
  const started = process.hrtime.bigint()
  const log = opts.log ?? (() => undefined)
  const now = (opts.now ?? (() => new Date()))()
  const layout = new StoreLayout(opts.store)
  await requireSourceDir(opts.source)
  await mkdir(layout.stateDir, { recursive: true })
  await mkdir(layout.snapshotsDir, { recursive: true })
  await mkdir(layout.objectsDir, { recursive: true })

  const pointer = await StoreClient.local(layout.root).pointerOrNull()
  const latest = pointer?.latest ?? null
  // A record without the root's metadata was written before manifest format 3: read everything.
  const base = latest?.root ? await loadIndexOf(layout, latest.id, log) : null
  if (base) opened.push(base)

  const reader = new SourceReader(opts.source)
  const elapsed = (): number => Number(process.hrtime.bigint() - started) / 1e9
  if (!base || !latest || !pointer) {
    // The first build, or one whose index is lost: the whole tree, read once, into a full archive.
    log(`scanning ${opts.source}`)
    const root = rootMeta(opts.source)
    const scan = await scanWholeTree(opts.source, opts.scanProcesses, layout.objectsDir)
    opened.push(scan.index)
    const id = await nextSnapshotId(layout, latest?.id ?? 0)
    const reason = latest ? (latest.root ? 'no index of the previous snapshot' : 'the previous snapshot is of an older format') : 'first snapshot'
    log(`packing full archive (${reason})`)
    const { pair: full, digest } = await writeFirstFull(layout.objectsDir, id, root, scan, reader, opts.readerThreads)
    const skipped = settleSkips(scan.skips, scan.warnings, opts, log)
    const clockWentBack = checkClock(latest, now, log)
    const counts = scan.index.counts()
    await publishBuilt(layout, opts, { id, now, latest, chain: pointer?.chain ?? [], digest, counts, root, full, index: scan.index })
    return {
      created: true, id, kind: 'full', parent: latest?.id ?? null, fullReason: reason, ...counts,
      changed: counts.files + counts.dirs + counts.links, deleted: 0, filesRead: reader.filesRead,
      deltaBytes: null, fullBytes: full.archive.length + full.manifest.length, warnings: scan.warnings,
      skipped, setIdDropped: scan.skips.setIdDropped, clockWentBack, seconds: elapsed(),
      ...(opts.rollbackOf !== undefined ? { rollbackOf: opts.rollbackOf } : {}),
    }
  }

  log(`scanning ${opts.source}`)
  const root = rootMeta(opts.source)
  const previousRoot = latest.root!
  const rootChanged = root.mode !== previousRoot.mode || root.mtime !== previousRoot.mtime
  const scan = await scanMetadata(opts.source, base, reader, layout.objectsDir, opts.scanProcesses)
  opened.push(scan.early)
  releaseMemory() // the previous index's lookup tables, dropped as the scan ended (index-rows.ts)
  const id = await nextSnapshotId(layout, latest.id)
  const changed = scan.changed // directories and symlinks; files are counted as they are read
  let filesChanged = 0
  const unchanged = (previous: SnapshotRecord, skipped: SkipSummary): BuildResult => ({
    created: false, id: previous.id, kind: previous.kind, parent: previous.parent, fullReason: null, ...scan.index.counts(),
    changed: 0, deleted: 0, filesRead: reader.filesRead, deltaBytes: null, fullBytes: null, warnings: scan.warnings,
    skipped, setIdDropped: scan.skips.setIdDropped, clockWentBack: null, seconds: elapsed(),
  })

  if (scan.toRead.length === 0 && changed.size === 0 && scan.deleted.length === 0 && !rootChanged) {
    return unchanged(latest, settleSkips(scan.skips, scan.warnings, opts, log))
  }
  log(`reading ${scan.toRead.length} files whose metadata changed; packing the delta`)
  const dirsAndLinks = [...scan.changed.values()].sort(byPath)
  const files = scan.toRead
  const order = files.pathOrder()
  const ahead = readAheadOfScan(reader, files, order, opts.readerThreads)
  const delta = await writeArchivePair(layout.objectsDir, { id, kind: 'delta', base: latest.id, root }, async (sink) => {
    let d = 0
    for (const k of order) {
      const path = files.path(k)
      while (d < dirsAndLinks.length && dirsAndLinks[d]!.path < path) await sink.add(dirsAndLinks[d++]!)
      await ahead.arrive(path)
      const read = readIntoIndex(ahead, k, scan)
      files.release(k) // a copy read during the scan is not kept past its packing
      if (!read) continue
      // Touched, not changed? Judged during the scan for a file read then.
      const previous = files.previous(k)
      if (previous === PREVIOUS_SAME || (previous === PREVIOUS_UNKNOWN && !fileChanged(scan, k, read.entry))) continue
      filesChanged++
      scan.digestChange.add(read.entry)
      await sink.add(read.entry, read.data)
    }
    while (d < dirsAndLinks.length) await sink.add(dirsAndLinks[d++]!)
    for (const p of scan.deleted) sink.deleted(p)
  }).finally(() => ahead.close())
  releaseMemory() // what the packing left (compressed chunks, entry lines) before the index is written
  const skipped = settleSkips(scan.skips, scan.warnings, opts, log)
  if (changed.size + filesChanged === 0 && scan.deleted.length === 0 && !rootChanged) {
    // Only stat signatures moved (touch, a copy of the same bytes): remember them, publish nothing.
    // The objects just written are left for prune: named by content, they may be byte for byte
    // ones a published snapshot already names (an empty delta archive is always the same).
    await scan.index.write(layout.index(latest.id), latest.id)
    return unchanged(latest, skipped)
  }
  const clockWentBack = checkClock(latest, now, log)
  const decision = decideFull({ policy: opts.policy, forced: opts.forceFull, chain: pointer.chain, thisDeltaBytes: delta.archive.length + delta.manifest.length })

  let full: ArchivePair | undefined
  if (decision.full) {
    log(`packing full archive (${decision.reason})`)
    try {
      full = await writeFullFromIndex(layout.objectsDir, id, root, scan, reader, opts.readerThreads)
    } catch (err) {
      if (!(err instanceof SourceChangedError)) throw err
      log(`warning: ${err.message}; the full archive waits for the next build`)
    }
  }

  const digest = TreeDigest.fromHex(latest.treeDigest)
  digest.removeRoot(previousRoot)
  digest.addRoot(root)
  digest.merge(scan.digestChange)
  const counts = scan.index.counts()
  await publishBuilt(layout, opts, { id, now, latest, chain: pointer.chain, digest, counts, root, delta, full, index: scan.index })
  return {
    created: true,
    id,
    kind: full ? 'full' : 'delta',
    parent: latest.id,
    fullReason: full ? decision.reason : null,
    ...counts,
    changed: changed.size + filesChanged + (rootChanged ? 1 : 0),
    deleted: scan.deleted.length,
    filesRead: reader.filesRead,
    deltaBytes: delta.archive.length + delta.manifest.length,
    fullBytes: full ? full.archive.length + full.manifest.length : null,
    warnings: scan.warnings,
    skipped,
    setIdDropped: scan.skips.setIdDropped,
    clockWentBack,
    seconds: elapsed(),
    ...(opts.rollbackOf !== undefined ? { rollbackOf: opts.rollbackOf } : {}),
  }
}

interface Built {
  readonly id: number
  readonly now: Date
  readonly latest: SnapshotRecord | null
  readonly chain: readonly SnapshotRecord[]
  readonly digest: TreeDigest
  readonly counts: TreeCounts
  readonly root: RootMeta
  readonly delta?: ArchivePair
  readonly full?: ArchivePair | undefined
  readonly index: NextIndex
}

/** Checks the digest a fleet rollback expects, then publishes the snapshot's record. */
async function publishBuilt(layout: StoreLayout, opts: BuildOptions, b: Built): Promise<void> {
  if (opts.expectTreeDigest !== undefined && b.digest.toHex() !== opts.expectTreeDigest) {
    throw new VerifyError(`the tree to publish has digest ${b.digest.toHex()}, expected ${opts.expectTreeDigest}; nothing was published`)
  }
  const record: SnapshotRecord = {
    id: b.id,
    parent: b.latest?.id ?? null,
    created: b.now.toISOString(),
    // The parent's build time, signed with this record: a replica tells a master clock that went
    // back from a frozen mirror even when this snapshot is a full (its chain then starts here).
    ...(b.latest ? { parentCreated: b.latest.created } : {}),
    kind: b.full ? 'full' : 'delta',
    treeDigest: b.digest.toHex(),
    ...b.counts,
    root: b.root,
    ...(b.delta ? { delta: b.delta } : {}),
    ...(b.full ? { full: b.full } : {}),
    ...(opts.rollbackOf !== undefined ? { rollbackOf: opts.rollbackOf } : {}),
  }
  await publish(layout, opts.privateKey, record, b.chain, b.index)
  opts.log?.(`published snapshot ${b.id} (${record.kind})`)
}

/** The next index, whichever way the build made it. */
export interface NextIndex {
  write(file: string, id: number): Promise<void>
}

/** The index the latest snapshot's build left, or null (with the reason logged) to read the whole tree. */
async function loadIndexOf(layout: StoreLayout, id: number, log: (line: string) => void): Promise<IndexRows | null> {
  try {
    const loaded = await readIndex(layout.index(id))
    if (loaded.id === id) return loaded
    loaded.close()
    return null
  } catch (err) {
    if (err instanceof IndexVersionError) log(`${err.message}: reading the whole tree`)
    else if ((err as NodeJS.ErrnoException).code === 'ENOENT') log(`no index for snapshot ${id}: reading the whole tree`)
    else throw err
    return null
  }
}

/** Record, index, pointer: in this order (see the module comment), each written atomically. */
export async function publish(layout: StoreLayout, key: KeyObject | null, record: SnapshotRecord, previousChain: readonly SnapshotRecord[], index: NextIndex | null): Promise<void> {
  try {
    await writeFileAtomic(layout.record(record.id), sealEnvelope({ format: POINTER_FORMAT, snapshot: record }, key))
    if (index) await index.write(layout.index(record.id), record.id)
    const chain = record.full ? [record] : [...chainFromLastFull(previousChain), record]
    await writeFileAtomic(layout.latest, sealEnvelope({ format: POINTER_FORMAT, latest: record, chain }, key))
  } catch (err) {
    throw asSnapshotError(err, `publishing snapshot ${record.id}`)
  }
  await removeOldIndexes(layout, record.id)
}

function chainFromLastFull(chain: readonly SnapshotRecord[]): SnapshotRecord[] {
  let start = 0
  for (let i = chain.length - 1; i >= 0; i--) {
    if (chain[i]!.full) {
      start = i
      break
    }
  }
  return chain.slice(start)
}

/** Ids only grow and are never reused, even after a build that died before publishing. */
async function nextSnapshotId(layout: StoreLayout, latestId: number): Promise<number> {
  let max = latestId
  for (const name of await readdir(layout.snapshotsDir)) {
    const m = /^(\d+)\.json$/.exec(name)
    if (m) max = Math.max(max, Number(m[1]))
  }
  return max + 1
}

async function removeOldIndexes(layout: StoreLayout, keepId: number): Promise<void> {
  for (const name of await readdir(layout.stateDir)) {
    const m = /^index-(\d+)\.bin$/.exec(name)
    if (m && Number(m[1]) !== keepId) await rm(`${layout.stateDir}/${name}`, { force: true })
  }
}

/** The files the scan did not read (past its early-read budget), read ahead on threads in packing order. */
function readAheadOfScan(reader: SourceReader, files: FilesToRead, order: Uint32Array, threads: number | undefined): ReadAhead {
  let i = 0
  const next = (): ReadJob | null => {
    while (i < order.length) {
      const k = order[i++]!
      if (files.early(k) < 0 && !files.streamedRead(k) && !files.wasRead(k)) return { path: files.path(k), sig: files.sig(k) }
    }
    return null
  }
  return new ReadAhead(reader, next, threads === undefined ? undefined : { threads })
}
