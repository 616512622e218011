import { parentPort } from 'node:worker_threads'
import { readBatch, type ReadJobs } from './read-batch.js'

/** A reader thread (read-ahead.ts): reads each batch it is sent, answers with what it read. */
parentPort!.on('message', (jobs: ReadJobs) => {
  const results = readBatch(jobs)
  parentPort!.postMessage(results, [results.bytes.buffer as ArrayBuffer, results.ends.buffer as ArrayBuffer, results.sha256.buffer as ArrayBuffer, results.changedNs.buffer as ArrayBuffer])
})
