import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, rm, stat } from 'node:fs/promises'
import type { ObjectRef } from '../core/snapshot-record.js'
import type { ObjectSource } from '../store/object-source.js'
import type { ReplicaLayout } from './replica-layout.js'

/**
 * Objects a replica downloaded, kept so a recycled tree can replay the deltas it missed without
 * fetching them again. A cached object is hashed again before every use: verify, then trust.
 */
export async function isCached(layout: ReplicaLayout, ref: ObjectRef): Promise<boolean> {
  const st = await stat(layout.object(ref.path)).catch(() => null)
  return st !== null && st.size === ref.length
}

export async function ensureObject(layout: ReplicaLayout, source: ObjectSource, ref: ObjectRef, progress?: (bytes: number) => void): Promise<string> {
  const file = layout.object(ref.path)
  if (await isCached(layout, ref)) {
    if ((await sha256OfFile(file)) === ref.sha256) return file
    await rm(file, { force: true })
  }
  await mkdir(layout.objectsDir, { recursive: true })
  await source.fetchObject(ref.path, file, { sha256: ref.sha256, length: ref.length }, progress)
  return file
}

async function sha256OfFile(file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer)
  return h.digest('hex')
}
