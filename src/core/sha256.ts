import * as nodeCrypto from 'node:crypto'

/** sha256 in hex. crypto.hash (Node >= 20.12) makes no Hash object: 2-4x faster on tiny files. */
export const sha256Hex: (data: Uint8Array) => string =
  typeof nodeCrypto.hash === 'function' ? (data) => nodeCrypto.hash('sha256', data, 'hex') : (data) => nodeCrypto.createHash('sha256').update(data).digest('hex')

/** sha256 as 32 bytes. */
export const sha256Digest: (data: Uint8Array) => Buffer =
  typeof nodeCrypto.hash === 'function' ? (data) => nodeCrypto.hash('sha256', data, 'buffer') as unknown as Buffer : (data) => nodeCrypto.createHash('sha256').update(data).digest()
