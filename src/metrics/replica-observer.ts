import type { Registry } from 'prom-client'
import { replicaStatus, type ReplicaStatus } from '../replica/replica-status.js'
import { TREES } from '../replica/replica-layout.js'
import { errorCodeOf, exitCodeOf } from './exit-code.js'
import { createReplicaMetrics, recordPullOutcome, recordReplicaStatus, type PullOutcome, type ReplicaMetrics } from './replica-metrics.js'

/** The last pull as `/status` reports it: its exit code, and its error when it failed. */
export interface LastOutcome {
  readonly at: string
  readonly exitCode: number
  readonly action: string | null
  readonly code: string | null
  readonly error: string | null
  readonly seconds: number
}

/** What a replica's `/status` endpoint serves: `snapshot status --json`'s object, plus the last outcome. */
export type ReplicaStatusReport = ReplicaStatus & { readonly lastOutcome: LastOutcome | null }

export interface ReplicaObserverOptions {
  readonly target: string
  readonly stateDir?: string
  readonly trees?: number
  /** The store's description, for the status's `store` field. */
  readonly source: string
  readonly now?: () => Date
}

/**
 * Watches a replica from inside the process that pulls it: after each pull, `observe` records the
 * outcome and re-reads the replica's state into the metrics; `status()` is what `/status` serves.
 * The store's latest is what the last pull read from the pointer: serving `/status` never makes a
 * request to the store.
 */
export class ReplicaObserver {
  readonly metrics: ReplicaMetrics
  private last: LastOutcome | null = null
  private latest: { latestId: number; created: string } | null = null

  constructor(
    readonly registry: Registry,
    private readonly opts: ReplicaObserverOptions,
  ) {
    this.metrics = createReplicaMetrics(registry)
  }

  /** After a pull: its result and/or error, and how long it took. */
  async observe(outcome: PullOutcome, seconds: number): Promise<void> {
    const now = this.now()
    recordPullOutcome(this.metrics, outcome, seconds, now.getTime())
    const r = outcome.result
    if (r && r.latestCreated !== null) this.latest = { latestId: r.id, created: r.latestCreated }
    const message = outcome.error instanceof Error ? outcome.error.message : outcome.error === null || outcome.error === undefined ? null : String(outcome.error)
    this.last = {
      at: now.toISOString(),
      exitCode: exitCodeOf(outcome.error),
      action: r?.action ?? null,
      code: message === null ? null : errorCodeOf(outcome.error),
      error: message,
      seconds,
    }
    await this.refresh()
  }

  /** Re-reads the replica's state into the gauges (live id, pin, trees, lag). */
  async refresh(): Promise<ReplicaStatusReport | null> {
    const s = await this.status()
    if (s) await recordReplicaStatus(this.metrics, s)
    return s
  }

  async status(): Promise<ReplicaStatusReport | null> {
    const s = await replicaStatus({ target: this.opts.target, ...(this.opts.stateDir ? { stateDir: this.opts.stateDir } : {}), trees: this.opts.trees ?? TREES.default, now: () => this.now() })
    if (!s) return null
    const store: ReplicaStatus['store'] = this.latest ? { source: this.opts.source, ...this.latest, lag: this.latest.latestId - (s.live?.id ?? 0) } : null
    return { ...s, store, lastOutcome: this.last }
  }

  private now(): Date {
    return (this.opts.now ?? (() => new Date()))()
  }
}
