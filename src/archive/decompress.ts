import { createReadStream } from 'node:fs'
import { UnsafeArchiveError } from '../core/errors.js'
import { createZstdDecompressor } from './zstd-codec.js'

/**
 * Compressed bytes go into a decoder this many at a time. A zstd block of a few bytes can expand
 * to 128 KiB, and every decoder here expands a whole input chunk before anyone can look at the
 * output: small slices are what keep a decompression bomb from filling memory before the caller
 * counts the bytes (at most ~32768:1, so a slice yields at most ~64 MiB).
 */
const INPUT_SLICE = 2048

/**
 * The uncompressed bytes of a .zst file as a stream of chunks, refused past `maxBytes`
 * (the exact size a signed record declares, for archives).
 */
export async function* decompressFile(file: string, maxBytes = Number.MAX_SAFE_INTEGER, what = file): AsyncGenerator<Buffer> {
  const decompressor = await createZstdDecompressor()
  const input = createReadStream(file, { highWaterMark: INPUT_SLICE })
  input.on('error', (err) => decompressor.destroy(err))
  input.pipe(decompressor)
  let total = 0
  try {
    for await (const chunk of decompressor as AsyncIterable<Buffer>) {
      total += chunk.length
      if (total > maxBytes) throw new UnsafeArchiveError(`${what} unpacks to more than the ${maxBytes} bytes it declares (a decompression bomb?)`)
      yield chunk
    }
  } finally {
    input.destroy()
    decompressor.destroy()
  }
}
