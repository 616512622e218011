import { UsageError } from '../core/errors.js'
import { openProbe, type PointerProbe, type ProbeOptions } from './watch-probe.js'
import type { PointerVersion, ProbeResult } from './watch-policy.js'

/**
 * The watch's probe over mirrors (`--from RELAY --from ORIGIN`): each check asks every mirror at
 * once (each one's long-poll where it has one) and ends as soon as any of them offers a pointer
 * the replica has not handled. So a replica starts pulling the moment the origin publishes, not
 * after its relay has copied the hour (the relay holds the objects it is copying until they land:
 * http/mirror-hold.ts); a relay that dies, or whose mirror stopped, holds nobody back.
 *
 * Each mirror is asked with its own validator (servers' ETags differ), so a check says what is new
 * *at that mirror*: a relay that catches up with bytes the replica already pulled is asked again
 * at once, to be held, rather than starting a pull that has nothing to do; a relay stuck on an old
 * pointer stays a 304 instead of flipping the replica between two pointers.
 */
export function openProbes(froms: readonly string[], opts: ProbeOptions = {}, log: (line: string) => void = () => undefined): PointerProbe {
  if (froms.length === 0) throw new UsageError("required option '--from <url|dir>' not specified")
  if (froms.length === 1) return openProbe(froms[0]!, opts)
  return new AllMirrorsProbe(froms.map((f) => openProbe(f, opts)), log)
}

/** What one mirror's part of a check came to. */
type MirrorAnswer = { readonly i: number; readonly result: ProbeResult }

class AllMirrorsProbe implements PointerProbe {
  readonly description: string
  /** Each mirror's last version seen: its own validator, and the bytes it stands for. */
  private readonly own: (PointerVersion | null)[]
  /** Whether each mirror answered its last check: a change is logged once, not every check. */
  private readonly answering: boolean[]
  /** The last version handed out: until the watch handles it (a pull that failed), it is still news. */
  private lastHandedOut: PointerVersion | null = null

  constructor(
    private readonly probes: readonly PointerProbe[],
    private readonly log: (line: string) => void,
  ) {
    this.description = probes.map((p) => p.description).join(' and ')
    this.own = probes.map(() => null)
    this.answering = probes.map(() => true)
  }

  async check(ifNoneMatch: string | null, signal: AbortSignal): Promise<ProbeResult> {
    // Each mirror tells only what changed at it since its last answer: a pull that failed on it
    // would otherwise wait for the next publication. Offered again, the pull retries. The watch
    // sends back the validator of the last version it handled, which this probe handed out.
    const last = this.lastHandedOut
    if (last !== null && last.etag !== ifNoneMatch) return { kind: 'fresh', version: last }
    const handled = last?.digest
    // A mirror asked with its own validator is held until something changes there: cut short when
    // another wins. One not yet seen answers at once: left to finish, so that its validator is known
    // from the next check on (else it would send its whole pointer again then).
    const controllers = this.probes.map(() => new AbortController())
    const held = this.own.map((v) => v !== null)
    const stop = (): void => controllers.forEach((c) => c.abort())
    signal.addEventListener('abort', stop, { once: true })
    try {
      const answers: MirrorAnswer[] = []
      let winner: MirrorAnswer | null = null
      let declare: () => void = () => undefined
      const won = new Promise<void>((resolve) => (declare = resolve))
      const all = Promise.all(
        this.probes.map(async (_, i) => {
          const result = await this.askMirror(i, ifNoneMatch, handled, controllers[i]!.signal)
          if (winner !== null) return // decided already: this one was cut short, or only finishing
          answers.push({ i, result })
          if (result.kind === 'fresh') {
            winner = { i, result }
            controllers.forEach((c, j) => held[j] && j !== i && c.abort())
            declare()
          }
        }),
      )
      await Promise.race([all, won])
      if (signal.aborted) return { kind: 'unchanged', held: false } // the watch is stopping: it ignores this
      this.noteWhoAnswered(answers)
      if (winner !== null) return this.handOut((winner as MirrorAnswer).result)
      return combine(answers.map((a) => a.result))
    } finally {
      signal.removeEventListener('abort', stop)
    }
  }

  close(): void {
    for (const p of this.probes) p.close()
  }

  /**
   * One mirror, with its own validator once it has one. Bytes the replica already handled, or the
   * bytes this mirror offered last time (a mirror without validators), are nothing new: asked
   * again with its validator, so it is held (or told 304).
   */
  private async askMirror(i: number, ifNoneMatch: string | null, handled: string | undefined, signal: AbortSignal): Promise<ProbeResult> {
    const before = this.own[i]?.digest
    const result = await this.ask(i, this.own[i]?.etag ?? ifNoneMatch, signal)
    if (result.kind !== 'fresh' || signal.aborted) return result
    const old = (v: PointerVersion): boolean => v.digest === handled || v.digest === before
    if (!old(result.version)) return result
    if (result.version.etag === null) return { kind: 'unchanged', held: false }
    const again = await this.ask(i, result.version.etag, signal)
    return again.kind === 'fresh' && (old(again.version) || again.version.digest === result.version.digest) ? { kind: 'unchanged', held: false } : again
  }

  private async ask(i: number, etag: string | null, signal: AbortSignal): Promise<ProbeResult> {
    const result = await this.probes[i]!.check(etag, signal)
    if (result.kind === 'fresh') this.own[i] = result.version
    return result
  }

  /** Remembers the version handed to the watch, whose validator its next check sends back. */
  private handOut(result: ProbeResult): ProbeResult {
    if (result.kind !== 'fresh') return result
    // A mirror without validators: one of ours, so that the watch's next check says what it handled.
    const version = { digest: result.version.digest, etag: result.version.etag ?? `"sha256-${result.version.digest}"` }
    this.lastHandedOut = version
    return { kind: 'fresh', version }
  }

  private noteWhoAnswered(answers: readonly MirrorAnswer[]): void {
    for (const { i, result } of answers) {
      const answered = result.kind !== 'error'
      if (answered === this.answering[i]) continue
      this.answering[i] = answered
      const what = this.probes[i]!.description
      this.log(answered ? `${what} answers again` : `${what} does not answer (${result.kind === 'error' ? result.message : ''}): watching the other mirrors`)
    }
  }
}

/** No mirror offered anything new: a 304 if any answered, else no pointer anywhere, else every error. */
function combine(results: readonly ProbeResult[]): ProbeResult {
  const unchanged = results.filter((r) => r.kind === 'unchanged')
  if (unchanged.length > 0) return { kind: 'unchanged', held: unchanged.some((r) => r.kind === 'unchanged' && r.held) }
  if (results.some((r) => r.kind === 'absent')) return { kind: 'absent' }
  return { kind: 'error', message: results.map((r) => (r.kind === 'error' ? r.message : '')).join('; ') }
}
