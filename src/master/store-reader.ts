import { readFile } from 'node:fs/promises'
import type { KeyObject } from 'node:crypto'
import { openEnvelope, parsePointerPayload, parseRecordPayload, type PointerPayload } from '../core/pointer.js'
import type { SnapshotRecord } from '../core/snapshot-record.js'
import { StoreLayout } from '../store/store-layout.js'

/** The master's view of its own store: the current pointer and records, read from disk. */
export async function readLocalPointer(layout: StoreLayout, trusted: readonly KeyObject[] = []): Promise<PointerPayload | null> {
  let bytes: Buffer
  try {
    bytes = await readFile(layout.latest)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  return parsePointerPayload(openEnvelope(bytes, trusted))
}

export async function readLocalRecord(layout: StoreLayout, id: number, trusted: readonly KeyObject[] = []): Promise<SnapshotRecord | null> {
  let bytes: Buffer
  try {
    bytes = await readFile(layout.record(id))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  return parseRecordPayload(openEnvelope(bytes, trusted), id)
}
