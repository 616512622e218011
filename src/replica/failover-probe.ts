import { UsageError } from '../core/errors.js'
import { openProbe, type PointerProbe, type ProbeOptions } from './watch-probe.js'
import type { ProbeResult } from './watch-policy.js'

/**
 * The watch's probe over mirrors (`--from RELAY --from ORIGIN`): each check asks the first mirror
 * (a relay's long-poll), and only when it fails the next ones in order, so a relay that dies costs
 * its replicas a failover of one check, not the hours until it is back; the next check asks the
 * first mirror again, so they return to it as soon as it answers. Validators differ between
 * servers: a pointer that comes back as "fresh" from another mirror with bytes already handled
 * pulls nothing (watch-policy.ts compares the bytes' digest).
 */
export function openProbes(froms: readonly string[], opts: ProbeOptions = {}): PointerProbe {
  if (froms.length === 0) throw new UsageError("required option '--from <url|dir>' not specified")
  if (froms.length === 1) return openProbe(froms[0]!, opts)
  return new FailoverProbe(froms.map((f) => openProbe(f, opts)))
}

class FailoverProbe implements PointerProbe {
  readonly description: string

  constructor(private readonly probes: readonly PointerProbe[]) {
    this.description = probes.map((p) => p.description).join(', then ')
  }

  async check(ifNoneMatch: string | null, signal: AbortSignal): Promise<ProbeResult> {
    const errors: string[] = []
    let absent = false
    for (const probe of this.probes) {
      const result = await probe.check(ifNoneMatch, signal)
      if (signal.aborted || (result.kind !== 'error' && result.kind !== 'absent')) return result
      // A relay with no pointer yet (a new one) is passed over like one that is down.
      if (result.kind === 'absent') absent = true
      else errors.push(`${probe.description}: ${result.message}`)
    }
    return absent ? { kind: 'absent' } : { kind: 'error', message: errors.join('; ') }
  }

  close(): void {
    for (const p of this.probes) p.close()
  }
}
