import { generateKeyPairSync } from 'node:crypto'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { UsageError } from '../core/errors.js'
import { keyIdOf } from '../core/pointer.js'
import type { Output } from './output.js'

/** Writes DIR/snapshot.key (0600, never overwritten unless --force) and DIR/snapshot.pub. */
export async function keygenCommand(opts: { out: string; force?: boolean }, out: Output): Promise<void> {
  await mkdir(opts.out, { recursive: true })
  const keyFile = join(opts.out, 'snapshot.key')
  const pubFile = join(opts.out, 'snapshot.pub')
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const flag = opts.force ? 'w' : 'wx'
  try {
    await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { flag, mode: 0o600, flush: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${keyFile} already exists; refusing to overwrite a signing key (pass --force to replace it)`)
    throw err
  }
  try {
    await writeFile(pubFile, publicKey.export({ type: 'spki', format: 'pem' }), { flag: 'w', mode: 0o644, flush: true })
  } catch (err) {
    await rm(keyFile, { force: true })
    throw err
  }
  const keyid = keyIdOf(publicKey)
  out.result({ privateKey: keyFile, publicKey: pubFile, keyid }, [
    `private key: ${keyFile} (mode 0600: keep it on the master, outside the store)`,
    `public key:  ${pubFile} (copy it to every replica; key id ${keyid})`,
  ])
}
