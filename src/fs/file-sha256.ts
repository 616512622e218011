import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'

/** Streams the file through sha256: memory stays flat whatever its size. */
export async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) hash.update(chunk)
  return hash.digest('hex')
}
