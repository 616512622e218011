import { parentPort } from 'node:worker_threads'
import { writeBatch, type FileBatch } from './file-batch.js'

/** A writer thread (file-writers.ts): writes each batch it is sent, answers with its failure or null. */
parentPort!.on('message', (batch: FileBatch) => {
  parentPort!.postMessage(writeBatch(batch))
})
