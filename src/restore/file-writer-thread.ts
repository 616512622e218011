import { parentPort } from 'node:worker_threads'
import { writeBatch, type FileBatch } from './file-batch.js'
import { verifyBatch, type VerifyBatch } from './verify-batch.js'

/** A writer thread (file-writers.ts): writes or checks each batch it is sent, answers with its failure or null. */
parentPort!.on('message', (batch: FileBatch | VerifyBatch) => {
  parentPort!.postMessage('verify' in batch ? verifyBatch(batch) : writeBatch(batch))
})
