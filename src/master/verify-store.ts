import { sha256OfFile } from '../fs/file-sha256.js'
import { lstat, readdir, readFile, stat } from 'node:fs/promises'
import { NoSnapshotError, UsageError } from '../core/errors.js'
import type { PointerPayload } from '../core/pointer.js'
import { recordObjects, type ObjectRef, type SnapshotRecord } from '../core/snapshot-record.js'
import { ENVELOPE_MAX_BYTES } from '../store/store-client.js'
import { LATEST, recordRelPath, StoreLayout } from '../store/store-layout.js'
import { TrustedKeys } from '../store/trusted-keys.js'

/**
 * `snapshot verify --store`: checks a store as a replica would, and names every problem rather
 * than stopping at the first. The pointer and every record on disk: structure, and signatures when
 * keys are given; the pointer's chain against the records; every object any record names: present,
 * exact length, sha256 (streamed, so memory stays flat whatever the size).
 */
export interface StoreProblem {
  /** The file at fault, relative to the store root. */
  readonly path: string
  readonly message: string
}

export interface VerifyStoreResult {
  readonly ok: boolean
  /** false: no --pubkey was given, so only the structure was checked. */
  readonly signaturesChecked: boolean
  readonly latest: number | null
  readonly records: number
  /** Records with an id above the latest: a build in progress or one that died (not a problem). */
  readonly unpublished: readonly number[]
  readonly objects: number
  readonly bytes: number
  readonly problems: readonly StoreProblem[]
}

export async function verifyStore(opts: { store: string; trust: TrustedKeys; log?: (line: string) => void }): Promise<VerifyStoreResult> {
  const log = opts.log ?? (() => undefined)
  const layout = new StoreLayout(opts.store)
  if (!(await stat(opts.store).catch(() => null))?.isDirectory()) throw new UsageError(`--store ${opts.store} is not a directory`)
  const problems: StoreProblem[] = []
  const problem = (path: string, message: string): void => {
    problems.push({ path, message })
  }
  const trust = opts.trust

  const pointer = await checkPointer(layout, trust, problem)
  const records = new Map<number, SnapshotRecord>()
  const names = (await readdir(layout.snapshotsDir).catch(() => [] as string[])).filter((n) => /^\d+\.json$/.test(n))
  for (const name of names) {
    const id = Number(name.slice(0, -'.json'.length))
    const record = await checkEnvelope(layout.record(id), recordRelPath(id), trust, problem, (bytes) => TrustedKeys.none.record(bytes, id))
    if (record) records.set(id, record)
  }
  if (!pointer && records.size === 0 && !(await lstat(layout.latest).catch(() => null))) {
    throw new NoSnapshotError(`${opts.store} holds no snapshot (no latest.json, no records)`)
  }
  if (pointer) checkChain(pointer, records, names, problem)

  // Every object any record names, once; the pointer's chain counts even if its records are gone.
  const objects = new Map<string, { ref: ObjectRef; by: Set<number> }>()
  for (const r of [...records.values(), ...(pointer?.chain ?? [])]) {
    for (const ref of recordObjects(r)) {
      const seen = objects.get(ref.path)
      if (!seen) objects.set(ref.path, { ref, by: new Set([r.id]) })
      else {
        seen.by.add(r.id)
        if (seen.ref.length !== ref.length) problem(ref.path, `snapshot ${r.id} says ${ref.length} bytes, another record says ${seen.ref.length}`)
      }
    }
  }
  let checked = 0
  let bytes = 0
  const paths = [...objects.keys()].sort()
  for (const path of paths) {
    const { ref, by } = objects.get(path)!
    const named = `named by snapshot ${[...by].sort((a, b) => a - b).join(', ')}`
    const st = await stat(layout.object(path)).catch(() => null)
    if (!st?.isFile()) {
      // A prune that ran meanwhile removes records before their objects: then nothing is wrong.
      const stillNamed = await anyExists([...by].map((id) => layout.record(id)))
      if (stillNamed || pointer?.chain.some((r) => by.has(r.id))) problem(path, `missing (${named})`)
      continue
    }
    if (st.size !== ref.length) {
      problem(path, `${st.size} bytes, the record says ${ref.length} (${named})`)
      continue
    }
    const actual = await sha256OfFile(layout.object(path))
    if (actual !== ref.sha256) problem(path, `sha256 is ${actual}, the record says ${ref.sha256} (${named})`)
    bytes += st.size
    if (++checked % 500 === 0) log(`checked ${checked} of ${paths.length} objects`)
  }
  const latestId = pointer?.latest.id ?? null
  const unpublished = latestId === null ? [] : [...records.keys()].filter((id) => id > latestId).sort((a, b) => a - b)
  return {
    ok: problems.length === 0,
    signaturesChecked: trust.checked,
    latest: latestId,
    records: records.size,
    unpublished,
    objects: objects.size,
    bytes,
    problems,
  }
}

async function checkPointer(layout: StoreLayout, trust: TrustedKeys, problem: (path: string, message: string) => void): Promise<PointerPayload | null> {
  if (!(await lstat(layout.latest).catch(() => null))) {
    const anyRecord = (await readdir(layout.snapshotsDir).catch(() => [] as string[])).some((n) => /^\d+\.json$/.test(n))
    if (anyRecord) problem(LATEST, 'missing, but the store holds snapshot records')
    return null
  }
  return checkEnvelope(layout.latest, LATEST, trust, problem, (bytes) => TrustedKeys.none.pointer(bytes))
}

/** The signature (when keys are given) and the structure, each reported on its own. */
async function checkEnvelope<T>(file: string, path: string, trust: TrustedKeys, problem: (path: string, message: string) => void, parse: (bytes: Buffer) => T): Promise<T | null> {
  let bytes: Buffer
  try {
    const st = await stat(file)
    if (st.size > ENVELOPE_MAX_BYTES) {
      problem(path, `${st.size} bytes: larger than any sound envelope (${ENVELOPE_MAX_BYTES})`)
      return null
    }
    bytes = await readFile(file)
  } catch (err) {
    problem(path, `unreadable: ${(err as Error).message}`)
    return null
  }
  const refused = trust.signatureProblem(bytes) // a structure problem is reported just below
  if (refused) problem(path, `signature: ${refused.message.replace(/^refusing the pointer: /, '')}`)
  try {
    return parse(bytes)
  } catch (err) {
    problem(path, (err as Error).message)
    return null
  }
}

/** The pointer's chain must start at a full, link parent to child, and equal the records on disk. */
function checkChain(pointer: PointerPayload, records: ReadonlyMap<number, SnapshotRecord>, names: readonly string[], problem: (path: string, message: string) => void): void {
  const chain = pointer.chain
  if (!chain[0]!.full) problem(LATEST, `the chain starts at snapshot ${chain[0]!.id}, which has no full archive`)
  for (let i = 1; i < chain.length; i++) {
    if (chain[i]!.parent !== chain[i - 1]!.id) problem(LATEST, `in the chain, snapshot ${chain[i]!.id} has parent ${chain[i]!.parent}, not ${chain[i - 1]!.id}`)
  }
  for (const r of chain) {
    const onDisk = records.get(r.id)
    if (onDisk) {
      if (JSON.stringify(onDisk) !== JSON.stringify(r)) problem(recordRelPath(r.id), `differs from snapshot ${r.id} in the pointer's chain`)
    } else if (!names.includes(`${r.id}.json`)) problem(recordRelPath(r.id), `missing, but the pointer's chain names snapshot ${r.id}`)
  }
}

async function anyExists(files: readonly string[]): Promise<boolean> {
  for (const f of files) if (await lstat(f).catch(() => null)) return true
  return false
}
