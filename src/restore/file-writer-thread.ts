import { parentPort } from 'node:worker_threads'
import { writeBatch, type FileBatch } from './file-batch.js'
import { verifyBatch, type VerifyBatch } from './verify-batch.js'

/** What a writer thread answers for each batch (file-writers.ts). */
export interface BatchAnswer {
  readonly failure: ReturnType<typeof writeBatch>
  /** Paths handed over to unlink that were directories, left for the caller to remove. */
  readonly directories: string[]
}

/** A writer thread: writes or checks each batch it is sent, answers with its failure or null, and the directories it left. */
parentPort!.on('message', (batch: FileBatch | VerifyBatch) => {
  const directories: string[] = []
  const failure = 'verify' in batch ? verifyBatch(batch) : writeBatch(batch, directories)
  parentPort!.postMessage({ failure, directories } satisfies BatchAnswer)
})
