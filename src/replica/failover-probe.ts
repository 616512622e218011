import { UsageError } from '../core/errors.js'
import { openProbe, type PointerProbe, type ProbeOptions } from './watch-probe.js'
import type { PointerVersion, ProbeResult } from './watch-policy.js'

/**
 * The watch's probe over mirrors (`--from RELAY --from ORIGIN`): each check asks the first mirror
 * (a relay's long-poll), and only when it fails or has no pointer yet the next ones in order, so a
 * relay that dies costs its replicas a failover of one check, not the hours until it is back; the
 * next check asks the first mirror again, so they return to it as soon as it answers.
 *
 * Validators differ between servers. A mirror asked with another's validator answers with the
 * pointer's bytes; when they are the bytes the validator stood for (nothing new), it is asked once
 * more with its own validator, so that its answer is a 304, held as a long-poll where it can be,
 * and the failover waits for the next publication right away instead of after an --interval.
 */
export function openProbes(froms: readonly string[], opts: ProbeOptions = {}, log: (line: string) => void = () => undefined): PointerProbe {
  if (froms.length === 0) throw new UsageError("required option '--from <url|dir>' not specified")
  if (froms.length === 1) return openProbe(froms[0]!, opts)
  return new FailoverProbe(froms.map((f) => openProbe(f, opts)), log)
}

/** Validators this probe handed out lately, with the digest of the bytes each stood for. */
const REMEMBERED = 16

class FailoverProbe implements PointerProbe {
  readonly description: string
  /** Every version lately seen, for the digest behind a validator the watch sends back. */
  private readonly versions: PointerVersion[] = []
  /** Each mirror's own last version: its validator for bytes another mirror's validator stands for. */
  private readonly own: (PointerVersion | null)[]
  /** The mirror that answered the last check: a change is logged once, not every check. */
  private answering = 0

  constructor(
    private readonly probes: readonly PointerProbe[],
    private readonly log: (line: string) => void,
  ) {
    this.description = probes.map((p) => p.description).join(', then ')
    this.own = probes.map(() => null)
  }

  async check(ifNoneMatch: string | null, signal: AbortSignal): Promise<ProbeResult> {
    const errors: string[] = []
    let absent = false
    const digest = ifNoneMatch === null ? undefined : this.versions.find((v) => v.etag === ifNoneMatch)?.digest
    for (const [i, probe] of this.probes.entries()) {
      const own = this.own[i]
      const etag = digest !== undefined && own?.digest === digest ? own.etag : ifNoneMatch
      let result = await this.ask(i, etag, signal)
      if (result.kind === 'fresh' && result.version.digest === digest && result.version.etag !== null && !signal.aborted) {
        // The same bytes under this mirror's validator: ask again with it, to be held or told 304.
        const again = await this.ask(i, result.version.etag, signal)
        if (again.kind !== 'error') result = again
      }
      if (signal.aborted || (result.kind !== 'error' && result.kind !== 'absent')) {
        if (!signal.aborted && i !== this.answering) {
          this.log(i === 0 ? `${probe.description} answers again: watching it` : `watching ${probe.description} instead (${errors.join('; ') || 'no pointer yet'})`)
          this.answering = i
        }
        return result
      }
      // A relay with no pointer yet (a new one) is passed over like one that is down.
      if (result.kind === 'absent') absent = true
      else errors.push(`${probe.description}: ${result.message}`)
    }
    return absent ? { kind: 'absent' } : { kind: 'error', message: errors.join('; ') }
  }

  close(): void {
    for (const p of this.probes) p.close()
  }

  private async ask(i: number, etag: string | null, signal: AbortSignal): Promise<ProbeResult> {
    const result = await this.probes[i]!.check(etag, signal)
    if (result.kind === 'fresh') {
      this.own[i] = result.version
      if (result.version.etag !== null && !this.versions.some((v) => v.etag === result.version.etag)) {
        this.versions.push(result.version)
        if (this.versions.length > REMEMBERED) this.versions.shift()
      }
    }
    return result
  }
}
