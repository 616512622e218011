import { forEachBounded } from '../core/bounded-pool.js'
import { openEnvelope, parsePointerPayload } from '../core/pointer.js'
import { crashPoint } from '../fs/crash-points.js'
import { DEFAULT_CONCURRENCY, LATEST, planPublish, type PointerView, type PublishPlan, type StoreFile } from './publish-plan.js'
import type { PutOutcome, StoreDestination } from './store-destination.js'

/**
 * The one code path that writes a store somewhere else, for `snapshot publish` (a local store into
 * a bucket or a directory) and `snapshot mirror` (a remote store, verified on the way, into a
 * relay's directory or bucket): publish-plan.ts decides what goes, from what the source offers
 * and what the destination holds; this sends it in the order that keeps readers safe: objects,
 * then records, then the pointer, then (prune mirrored) deletions under the new pointer.
 */
export interface CopySource {
  readonly description: string
  /** The pointer to put up, read before the source's files were listed: it names only files listed. */
  readonly pointer: { readonly bytes: Buffer; readonly view: PointerView }
  readonly objects: readonly StoreFile[]
  readonly records: readonly StoreFile[]
  /** Puts one of its files into the destination; a remote source checks it against the signed pointer first. */
  send(file: StoreFile, to: StoreDestination): Promise<PutOutcome>
}

export interface CopyOptions {
  readonly source: CopySource
  readonly to: StoreDestination
  /** What the destination holds and its pointer, when the caller has read them already. */
  readonly remote?: { readonly files: ReadonlyMap<string, number>; readonly pointer: Buffer | null }
  readonly concurrency?: number
  /** Delete from the destination what the source no longer offers (default true). */
  readonly prune?: boolean
  readonly force?: boolean
  /** How the log names the job: `publishing`, `mirroring`. */
  readonly verb?: string
  readonly log?: (line: string) => void
}

export interface PublishResult {
  readonly to: string
  readonly id: number
  readonly uploaded: { readonly objects: number; readonly records: number; readonly pointer: boolean; readonly bytes: number; readonly multipart: number }
  readonly skipped: number
  readonly deleted: readonly string[]
  readonly held: readonly string[]
  /** Local files that vanished (a prune ran) between the listing and their upload. */
  readonly vanished: number
  readonly seconds: number
}

export const POINTER_MAX_BYTES = 4 << 20

export async function copyStore(opts: CopyOptions): Promise<PublishResult> {
  const started = process.hrtime.bigint()
  const log = opts.log ?? (() => undefined)
  const { source, to } = opts
  const where = to.description
  const remote = opts.remote ?? (await readDestination(to))
  const remoteView = remote.pointer ? viewOf(remote.pointer) : null
  if (remote.pointer && !remoteView) log(`warning: ${where}${where.endsWith('/') ? '' : '/'}${LATEST} is not a pointer this tool can read: nothing will be deleted there`)

  const plan: PublishPlan = planPublish({
    local: { objects: source.objects, records: source.records, pointer: source.pointer },
    remote: remote.files,
    remotePointer: remote.pointer ? { bytes: remote.pointer, view: remoteView } : null,
    prune: opts.prune ?? true,
    force: opts.force ?? false,
  })
  const id = source.pointer.view.id
  log(`${opts.verb ?? 'publishing'} snapshot ${id} to ${where}: ${plan.objects.length} objects and ${plan.records.length} records to send, ${plan.skipped} already there`)

  const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY
  const sent = { bytes: 0, multipart: 0, vanished: 0 }
  const send = async (f: StoreFile): Promise<void> => {
    const r = await source.send(f, to)
    if (r === 'vanished') sent.vanished++
    else {
      sent.bytes += f.size
      if (r === 'multipart') sent.multipart++
    }
    crashPoint('publish:object')
  }
  await forEachBounded(plan.objects, concurrency, send)
  await forEachBounded(plan.records, concurrency, send)
  if (plan.pointer) {
    crashPoint('publish:pointer')
    await to.putPointer(source.pointer.bytes)
    log(`${where} now names snapshot ${id}`)
  }
  const deleted: string[] = []
  const remove = async (key: string): Promise<void> => {
    await to.delete(key)
    deleted.push(key)
  }
  // Delete only under the pointer this copy put there (or found there): if another writer moved
  // it meanwhile, what it names is unknown here, so nothing goes this time.
  let deletes = plan.deletes
  if (deletes.length > 0) {
    const now = await to.readPointer(POINTER_MAX_BYTES)
    if (!now?.equals(source.pointer.bytes)) {
      log(`warning: ${where} ${LATEST} changed during this copy (another writer?): nothing deleted this time`)
      deletes = []
    }
  }
  // Records before their objects, as a local prune does: a crash in between leaves unreferenced
  // objects (deleted next time), never a record that names a missing object.
  await forEachBounded(deletes.filter((k) => k.startsWith('snapshots/')), concurrency, remove)
  await forEachBounded(deletes.filter((k) => !k.startsWith('snapshots/')), concurrency, remove)
  if (deleted.length > 0) log(`deleted ${deleted.length} files the source no longer has`)
  if (plan.held.length > 0) log(`kept ${plan.held.length} files the source no longer has, because a pointer there still names them (the next copy removes them)`)
  return {
    to: where,
    id,
    uploaded: { objects: plan.objects.length - sent.vanished, records: plan.records.length, pointer: plan.pointer, bytes: sent.bytes, multipart: sent.multipart },
    skipped: plan.skipped,
    deleted: deleted.sort(),
    held: plan.held,
    vanished: sent.vanished,
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
  }
}

/** What a destination holds: every file with its size, and its pointer's bytes. */
export async function readDestination(to: StoreDestination): Promise<{ files: Map<string, number>; pointer: Buffer | null }> {
  const files = await to.list()
  const pointer = files.has(LATEST) ? await to.readPointer(POINTER_MAX_BYTES) : null
  return { files, pointer }
}

/** The pointer's id and chain, read without a signature check: only to know what it names. */
export function viewOf(bytes: Buffer): PointerView | null {
  try {
    const p = parsePointerPayload(openEnvelope(bytes, []))
    return { id: p.latest.id, chain: p.chain }
  } catch {
    return null
  }
}
