import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { mkdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Transform } from 'node:stream'
import { createZstdCompressor } from '../archive/zstd-codec.js'
import type { ObjectRef } from '../core/snapshot-record.js'
import { writeStreamAtomic } from '../fs/durable.js'

/**
 * Writes one zstd-compressed object into `objects/`, named by the sha256 of its compressed bytes.
 * `produce` pushes uncompressed bytes through `write`, which honours the compressor's back
 * pressure, so memory stays flat whatever the size. The object appears whole or not at all.
 */
export async function writeCompressedObject<T>(
  objectsDir: string,
  ext: string,
  produce: (write: (chunk: Buffer) => Promise<void>) => Promise<T>,
): Promise<{ ref: ObjectRef; result: T }> {
  await mkdir(objectsDir, { recursive: true })
  const compressor: Transform = await createZstdCompressor(3)
  const hash = createHash('sha256')
  let length = 0
  const { result, finalPath } = await writeStreamAtomic(join(objectsDir, `incoming.${ext}`), async (handle) => {
    const out = handle.createWriteStream({ autoClose: false })
    let writeError: unknown
    out.on('error', (err) => (writeError = err))
    compressor.on('data', (chunk: Buffer) => {
      hash.update(chunk)
      length += chunk.length
      if (!out.write(chunk)) compressor.pause()
    })
    out.on('drain', () => compressor.resume())
    const compressorDone = once(compressor, 'end')
    compressorDone.catch(() => undefined) // awaited below; this only keeps an early failure from going unhandled
    const write = async (chunk: Buffer): Promise<void> => {
      if (writeError) throw writeError
      if (!compressor.write(chunk)) await once(compressor, 'drain')
    }
    const result = await produce(write)
    compressor.end()
    await compressorDone
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())))
    if (writeError) throw writeError
    const sha256 = hash.digest('hex')
    return { result: { result, sha256 }, finalPath: join(objectsDir, `${sha256}.${ext}`) }
  })
  const size = (await stat(finalPath)).size
  if (size !== length) throw new Error(`object ${finalPath}: wrote ${length} bytes, found ${size}`)
  return { ref: { path: `objects/${result.sha256}.${ext}`, sha256: result.sha256, length }, result: result.result }
}
