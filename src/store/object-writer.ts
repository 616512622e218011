import { createHash } from 'node:crypto'
import { mkdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Transform } from 'node:stream'
import { createZstdCompressor } from '../archive/zstd-codec.js'
import type { ObjectRef } from '../core/snapshot-record.js'
import { crashPoint } from '../fs/crash-points.js'
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
    // Async iteration pulls from the compressor only as fast as the disk takes it.
    const pump = (async () => {
      for await (const chunk of compressor as AsyncIterable<Buffer>) {
        hash.update(chunk)
        length += chunk.length
        // A write can stop short (the disk filling up): loop, so the next call reports ENOSPC.
        for (let done = 0; done < chunk.length; ) done += (await handle.write(chunk, done, chunk.length - done)).bytesWritten
        crashPoint('object:chunk')
      }
    })()
    let pumpError: unknown
    pump.catch((err: unknown) => {
      pumpError = err
      compressor.destroy(err as Error) // unblocks a writer waiting for 'drain'
    })
    // Settles once the compressor is done with the chunk (its write callback), so the caller may
    // fill the same buffer again (tar-pack.ts does); one chunk in flight is the back pressure. A
    // compressor destroyed with a chunk held (the pump failed) never calls back: its close does.
    const write = (chunk: Buffer): Promise<void> =>
      new Promise((resolve, reject) => {
        const onClose = (): void => reject(pumpError ?? new Error('the compressor closed before it took a chunk'))
        compressor.once('close', onClose)
        compressor.write(chunk, (err) => {
          compressor.off('close', onClose)
          if (err) reject(err)
          else resolve()
        })
      })
    let result: T
    try {
      result = await produce(write)
      compressor.end()
      await pump
    } catch (err) {
      compressor.destroy()
      await pump.catch(() => undefined)
      throw pumpError ?? err // the disk's error (ENOSPC) is the cause; the compressor's abort only follows it
    }
    const sha256 = hash.digest('hex')
    return { result: { result, sha256 }, finalPath: join(objectsDir, `${sha256}.${ext}`) }
  })
  const size = (await stat(finalPath)).size
  if (size !== length) throw new Error(`object ${finalPath}: wrote ${length} bytes, found ${size}`)
  return { ref: { path: `objects/${result.sha256}.${ext}`, sha256: result.sha256, length }, result: result.result }
}
