import type { KeyObject } from 'node:crypto'
import { SignatureError } from '../core/errors.js'
import { openEnvelope, parsePointerPayload, parseRecordPayload, type PointerPayload } from '../core/pointer.js'
import type { SnapshotRecord } from '../core/snapshot-record.js'

/**
 * The public keys a reader trusts (`--pubkey`, several during a key rotation), bound once: every
 * pointer and record it opens must verify under one of them. With none, envelopes are taken as
 * they are (an operator's explicit choice, warned about by the CLI; the master reading its own
 * store).
 */
export class TrustedKeys {
  static readonly none = new TrustedKeys([])

  constructor(private readonly keys: readonly KeyObject[]) {}

  /** Whether signatures are checked at all. */
  get checked(): boolean {
    return this.keys.length > 0
  }

  pointer(bytes: Buffer): PointerPayload {
    return parsePointerPayload(openEnvelope(bytes, this.keys))
  }

  record(bytes: Buffer, id: number): SnapshotRecord {
    return parseRecordPayload(openEnvelope(bytes, this.keys), id)
  }

  /** The signature's verdict alone, for a check that names every problem: null when one verifies, or no key is trusted. */
  signatureProblem(bytes: Buffer): SignatureError | null {
    if (!this.checked) return null
    try {
      openEnvelope(bytes, this.keys)
      return null
    } catch (err) {
      if (err instanceof SignatureError) return err
      return null // a structure problem: the caller reports it on its own
    }
  }
}
