import { forEachBounded } from '../core/bounded-pool.js'
import { asSnapshotError, NetworkError, NoSpaceError, NoSnapshotError, SnapshotError, VerifyError } from '../core/errors.js'
import type { ObjectExpectation, ObjectSource } from './object-source.js'
import { LATEST } from './store-layout.js'
import type { TrustedKeys } from './trusted-keys.js'

/**
 * `pull --from A --from B ...`: several mirrors of one store behind one ObjectSource. The signed
 * pointer makes every mirror equally trusted, so the pointer is asked of every mirror at once
 * (bounded in number and time), and the newest one that verifies wins; a mirror that is down,
 * serves no or an invalid pointer, or lags behind is named in `reports` and skipped. Records and
 * objects then come from the mirrors in the order given, those that answered for their pointer
 * first: an object is named by its sha256 and checked against the signed pointer whoever serves
 * it, so the first-named mirror (a relay next door) serves what it holds even while its pointer
 * lags, and holds what it is copying right now until it lands (http/mirror-hold.ts); the origin
 * serves the rest.
 */
export interface Mirror {
  /** Serves records and objects: the usual timeouts and retries. */
  readonly source: ObjectSource
  /**
   * The same mirror with one retry, asked while another mirror follows it in the order: a relay
   * that died between the pointer and the objects costs a failover, not the whole backoff.
   */
  readonly quick?: ObjectSource
  /** A source that asks for the pointer (few retries), stopped by `signal` when the time for the pointers is up. */
  readonly probe: (signal: AbortSignal) => ObjectSource
}

export type MirrorStatus = 'chosen' | 'current' | 'stale' | 'down' | 'invalid' | 'empty'
export interface MirrorReport {
  readonly source: string
  readonly status: MirrorStatus
  readonly latestId: number | null
  readonly created: string | null
  readonly error?: string
  readonly code?: string
}

export interface MirroredSourceOptions {
  /** The keys the pointers must verify under: a mirror whose pointer does not is skipped. */
  readonly trust: TrustedKeys
  /** How long every mirror together has to answer for its pointer. */
  readonly pointerTimeoutMs: number
  readonly concurrency?: number
  readonly log?: (line: string) => void
}

export class MirroredSource implements ObjectSource {
  readonly description: string
  /** What each mirror answered for the pointer, the last time it was asked (in the order given). */
  reports: MirrorReport[] = []
  private order: Mirror[]

  constructor(
    private readonly mirrors: readonly Mirror[],
    private readonly opts: MirroredSourceOptions,
  ) {
    this.description = mirrors.map((m) => m.source.description).join(', ')
    this.order = [...mirrors]
  }

  /** Each mirror in the order, as its source for the attempt: quick while another one follows. */
  private attempts(): ObjectSource[] {
    return this.order.map((m, i) => (i < this.order.length - 1 ? (m.quick ?? m.source) : m.source))
  }

  async getSmall(relPath: string, maxBytes: number): Promise<Buffer | null> {
    if (relPath === LATEST) return this.choosePointer(maxBytes)
    // A record: the chosen mirror's, else any other's (a lagging mirror may still hold it; it is signed).
    let firstError: unknown
    for (const source of this.attempts()) {
      try {
        const bytes = await source.getSmall(relPath, maxBytes)
        if (bytes) return bytes
      } catch (err) {
        if (fatal(err)) throw err
        firstError ??= err
        this.opts.log?.(`mirror ${source.description}: ${message(err)}; trying the next mirror`)
      }
    }
    if (firstError) throw firstError
    return null
  }

  async fetchObject(relPath: string, dest: string, expect: ObjectExpectation, progress?: (bytes: number) => void): Promise<void> {
    let firstError: unknown
    for (const source of this.attempts()) {
      try {
        return await source.fetchObject(relPath, dest, expect, progress)
      } catch (err) {
        if (fatal(err)) throw err
        firstError ??= err
        this.opts.log?.(`mirror ${source.description}: ${message(err)}; trying the next mirror`)
      }
    }
    throw firstError
  }

  /** Asks every mirror for its pointer; returns the newest that verifies and puts its mirror first. */
  private async choosePointer(maxBytes: number): Promise<Buffer | null> {
    const answers = new Map<number, { bytes: Buffer; id: number; created: string } | { error: unknown; empty?: boolean }>()
    const deadline = new AbortController()
    const timer = setTimeout(() => deadline.abort(), this.opts.pointerTimeoutMs)
    try {
      await forEachBounded([...this.mirrors.keys()], this.opts.concurrency ?? 8, async (i) => {
        const mirror = this.mirrors[i]!
        try {
          const bytes = await mirror.probe(deadline.signal).getSmall(LATEST, maxBytes)
          if (!bytes) return void answers.set(i, { error: new NoSnapshotError(`${mirror.source.description} has no latest.json`), empty: true })
          const p = this.opts.trust.pointer(bytes)
          answers.set(i, { bytes, id: p.latest.id, created: p.latest.created })
        } catch (err) {
          if (err instanceof NoSpaceError) throw err
          answers.set(i, { error: deadline.signal.aborted ? timedOut(err, this.opts.pointerTimeoutMs) : err })
        }
      })
    } finally {
      clearTimeout(timer)
    }
    let best = -1
    for (const [i, a] of answers) if ('bytes' in a && (best < 0 || a.id > (answers.get(best) as { id: number }).id || (a.id === (answers.get(best) as { id: number }).id && i < best))) best = i
    const bestId = best >= 0 ? (answers.get(best) as { id: number }).id : null
    this.reports = this.mirrors.map((m, i): MirrorReport => {
      const a = answers.get(i)
      const source = m.source.description
      if (!a) return { source, status: 'down', latestId: null, created: null, error: 'no answer', code: 'ERR_NETWORK' }
      if ('bytes' in a) return { source, status: i === best ? 'chosen' : a.id < bestId! ? 'stale' : 'current', latestId: a.id, created: a.created }
      const e = asSnapshotError(a.error, source)
      const status: MirrorStatus = a.empty ? 'empty' : e instanceof VerifyError ? 'invalid' : 'down'
      return { source, status, latestId: null, created: null, error: e.message, code: e.code }
    })
    for (const r of this.reports) {
      if (r.status === 'stale') this.opts.log?.(`mirror ${r.source} is stale: it offers snapshot ${r.latestId}, another offers ${bestId}; skipped`)
      else if (r.status !== 'chosen' && r.status !== 'current') this.opts.log?.(`mirror ${r.source} skipped (${r.status}): ${r.error}`)
    }
    if (best < 0) {
      const errors = this.reports.map((r) => `${r.source}: ${r.error}`).join('; ')
      if (this.reports.every((r) => r.status === 'empty')) return null
      // Exit 3 when some mirror answered with a pointer that does not verify and none with one that does.
      const anyInvalid = this.reports.some((r) => r.status === 'invalid')
      throw anyInvalid ? new VerifyError(`no mirror offers a pointer that verifies: ${errors}`) : new NetworkError(`no mirror answered: ${errors}`)
    }
    const chosen = this.mirrors[best]!.source
    const answered = (i: number): boolean => 'bytes' in (answers.get(i) ?? {})
    const indexes = [...this.mirrors.keys()]
    this.order = [...indexes.filter(answered), ...indexes.filter((i) => !answered(i))].map((i) => this.mirrors[i]!)
    this.opts.log?.(`mirror ${chosen.description} chosen: snapshot ${bestId}`)
    return (answers.get(best) as { bytes: Buffer }).bytes
  }
}

/** Out of room or aborted: no other mirror can help. */
function fatal(err: unknown): boolean {
  return err instanceof NoSpaceError || (err as { name?: string } | undefined)?.name === 'AbortError'
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function timedOut(err: unknown, ms: number): unknown {
  if (err instanceof SnapshotError) return err
  const e = err as { name?: string; message?: string } | undefined
  if (e?.name === 'AbortError' || /abort/i.test(e?.message ?? '')) return new NetworkError(`no pointer within ${ms / 1000} s`, { cause: err })
  return err
}
