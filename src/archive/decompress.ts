import { createReadStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { Writable } from 'node:stream'
import { UnsafeArchiveError } from '../core/errors.js'
import { createZstdDecompressor } from './zstd-codec.js'

/** The uncompressed bytes of a .zst file as a stream of chunks. */
export async function* decompressFile(file: string): AsyncGenerator<Buffer> {
  const decompressor = await createZstdDecompressor()
  const input = createReadStream(file, { highWaterMark: 1 << 20 })
  input.on('error', (err) => decompressor.destroy(err))
  input.pipe(decompressor)
  try {
    for await (const chunk of decompressor as AsyncIterable<Buffer>) yield chunk
  } finally {
    input.destroy()
    decompressor.destroy()
  }
}

/** A whole .zst file in memory, refused past `maxBytes` (a decompression bomb). */
export async function decompressFileToBuffer(file: string, maxBytes: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = []
  let total = 0
  const decompressor = await createZstdDecompressor()
  await pipeline(
    createReadStream(file, { highWaterMark: 1 << 20 }),
    decompressor,
    new Writable({
      write(chunk: Buffer, _enc, done) {
        total += chunk.length
        if (total > maxBytes) return done(new UnsafeArchiveError(`${what} unpacks to more than ${maxBytes} bytes`))
        parts.push(chunk)
        done()
      },
    }),
  )
  return Buffer.concat(parts, total)
}
