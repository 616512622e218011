import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto'
import { SignatureError, VerifyError } from './errors.js'
import { parseSnapshotRecord, type SnapshotRecord } from './snapshot-record.js'

/**
 * The signed pointer (latest.json) and the per-snapshot records (snapshots/<id>.json) share one
 * envelope: the payload travels as the exact string that was signed, so no canonical JSON is
 * needed, and the signature sits inline in the same file (a CDN cannot pair an old payload with a
 * new detached signature).
 */
export const POINTER_FORMAT = 'playlist-snapshot/1'
const SIGNING_CONTEXT = 'playlist-snapshot signed payload v1\n'

export interface PointerPayload {
  readonly format: typeof POINTER_FORMAT
  readonly latest: SnapshotRecord
  /** Records in ascending id order, ending with `latest`: at least back to the latest full. */
  readonly chain: readonly SnapshotRecord[]
}
export interface RecordPayload {
  readonly format: typeof POINTER_FORMAT
  readonly snapshot: SnapshotRecord
}
export interface Envelope {
  readonly signed: string
  readonly signatures: readonly { keyid: string; sig: string }[]
}

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16)
}

export function loadPrivateKey(pem: string | Buffer): KeyObject {
  const key = createPrivateKey(pem)
  if (key.asymmetricKeyType !== 'ed25519') throw new SignatureError('the signing key is not an ed25519 key')
  return key
}
export function loadPublicKey(pem: string | Buffer): KeyObject {
  const key = createPublicKey(pem)
  if (key.asymmetricKeyType !== 'ed25519') throw new SignatureError('the public key is not an ed25519 key')
  return key
}

export function sealEnvelope(payload: PointerPayload | RecordPayload, privateKey: KeyObject | null): string {
  const signed = JSON.stringify(payload)
  const signatures = privateKey
    ? [{ keyid: keyIdOf(createPublicKey(privateKey)), sig: sign(null, signingBytes(signed), privateKey).toString('base64') }]
    : []
  return JSON.stringify({ signed, signatures }, null, 1) + '\n'
}

/**
 * Returns the payload of an envelope. With trusted keys, at least one signature must verify
 * under one of them (several keys are trusted during a key rotation); without keys, the
 * envelope is taken as it is (an operator's explicit choice: no --pubkey).
 */
export function openEnvelope(bytes: Buffer | string, trusted: readonly KeyObject[]): unknown {
  let env: Envelope
  try {
    env = JSON.parse(bytes.toString()) as Envelope
  } catch (err) {
    throw new VerifyError('the pointer is not valid JSON', { cause: err })
  }
  if (typeof env !== 'object' || env === null || typeof env.signed !== 'string' || !Array.isArray(env.signatures)) {
    throw new VerifyError('the pointer is not a signed envelope')
  }
  if (trusted.length > 0) {
    const ok = trusted.some((key) => {
      const keyid = keyIdOf(key)
      return env.signatures.some(
        (s) => s && s.keyid === keyid && typeof s.sig === 'string' && verify(null, signingBytes(env.signed), key, Buffer.from(s.sig, 'base64')),
      )
    })
    if (!ok) {
      const why = env.signatures.length === 0 ? 'it is unsigned' : 'no signature verifies under a trusted key'
      throw new SignatureError(`refusing the pointer: ${why}`)
    }
  }
  try {
    return JSON.parse(env.signed)
  } catch (err) {
    throw new VerifyError('the signed payload is not valid JSON', { cause: err })
  }
}

export function parsePointerPayload(v: unknown): PointerPayload {
  const o = v as Record<string, unknown> | null
  if (typeof o !== 'object' || o === null || o.format !== POINTER_FORMAT) {
    throw new VerifyError(`unknown pointer format (expected ${POINTER_FORMAT})`)
  }
  const latest = parseSnapshotRecord(o.latest)
  if (!Array.isArray(o.chain) || o.chain.length === 0) throw new VerifyError('malformed pointer: empty chain')
  const chain = o.chain.map(parseSnapshotRecord)
  for (let i = 1; i < chain.length; i++) {
    if (chain[i]!.id <= chain[i - 1]!.id) throw new VerifyError('malformed pointer: chain out of order')
  }
  if (JSON.stringify(chain[chain.length - 1]) !== JSON.stringify(latest)) {
    throw new VerifyError('malformed pointer: chain does not end with the latest snapshot')
  }
  return { format: POINTER_FORMAT, latest, chain }
}

export function parseRecordPayload(v: unknown, expectedId: number): SnapshotRecord {
  const o = v as Record<string, unknown> | null
  if (typeof o !== 'object' || o === null || o.format !== POINTER_FORMAT) {
    throw new VerifyError(`unknown snapshot record format (expected ${POINTER_FORMAT})`)
  }
  const record = parseSnapshotRecord(o.snapshot)
  if (record.id !== expectedId) throw new VerifyError(`snapshots/${expectedId}.json holds snapshot ${record.id}`)
  return record
}

/** The latest snapshot's parent's build time: signed in its record, or (older records) from the pointer's chain. */
export function parentCreated(pointer: { latest: SnapshotRecord; chain: readonly SnapshotRecord[] }): { latestParentCreated?: string } {
  const created = pointer.latest.parentCreated ?? pointer.chain.find((r) => r.id === pointer.latest.parent)?.created
  return created !== undefined ? { latestParentCreated: created } : {}
}

function signingBytes(signed: string): Buffer {
  return Buffer.from(SIGNING_CONTEXT + signed, 'utf8')
}
