import type { KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { UsageError } from '../core/errors.js'
import { loadPrivateKey, loadPublicKey } from '../core/pointer.js'
import { TrustedKeys } from '../store/trusted-keys.js'

const PRIVATE_KEY_PEM = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/i

/** Key files named on the command line, with messages that say which file is wrong. */
export async function readPrivateKeyFile(file: string): Promise<KeyObject> {
  const pem = await readFile(file).catch((err: Error) => {
    throw new UsageError(`cannot read --key ${file}: ${err.message}`)
  })
  try {
    return loadPrivateKey(pem)
  } catch (err) {
    throw new UsageError(`--key ${file} is not an ed25519 private key (make one with \`snapshot keygen\`)`, { cause: err })
  }
}

/** `--pubkey FILE...`: the keys every pointer and record read from the store must verify under. */
export async function readTrustedKeys(files: readonly string[]): Promise<TrustedKeys> {
  const keys: KeyObject[] = []
  for (const file of files) {
    const pem = await readFile(file).catch((err: Error) => {
      throw new UsageError(`cannot read --pubkey ${file}: ${err.message}`)
    })
    // Node derives a public key from a private one without a word: a replica handed the signing
    // key would work, and the key would spread to every replica. Refused, by content.
    if (PRIVATE_KEY_PEM.test(pem.toString('latin1'))) {
      throw new UsageError(`--pubkey ${file} holds a PRIVATE key: give replicas only the public key (snapshot.pub, from \`snapshot keygen\`), never copy snapshot.key off the master; if it was copied, delete that copy`)
    }
    try {
      keys.push(loadPublicKey(pem))
    } catch (err) {
      throw new UsageError(`--pubkey ${file} is not an ed25519 public key`, { cause: err })
    }
  }
  return new TrustedKeys(keys)
}
