import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'

/**
 * s3rver in a process of its own, started by helpers/s3-server.ts with `--openssl-legacy-provider`:
 * its ListObjectsV2 continuation tokens are DES-encrypted, which OpenSSL 3 only offers through
 * the legacy provider. Prints {"port":N} once it listens; SIGTERM stops it.
 */
const require = createRequire(import.meta.url)
const S3rver = require('s3rver') as new (o: Record<string, unknown>) => { run(): Promise<AddressInfo>; close(): Promise<void> }
const [directory, bucket] = process.argv.slice(2)
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: process.env.S3RVER_LOG !== '1', directory, configureBuckets: [{ name: bucket }] })
const address = await server.run()
process.stdout.write(JSON.stringify({ port: address.port }) + '\n')
process.on('SIGTERM', () => {
  void server.close().finally(() => process.exit(0))
})
