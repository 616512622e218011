/**
 * `node dist/scripts/verify-bench.js --tree DIR [--rounds 2]`: what the check after an apply costs
 * for every path of DIR (a replica's tree), two ways, alternating: an lstat per path in order on
 * one thread (verifyApplied before 2026-12-08), and the writer threads' batches (verify-batch.ts,
 * four threads, started beforehand as an apply's writes start them). Wall and CPU time of the
 * whole process. It backs the choice in apply-archive.ts (verifyApplied).
 */
import { execFileSync } from 'node:child_process'
import { lstatSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { DEFAULT_WRITER_THREADS, FileWriters } from '../src/restore/file-writers.js'
import { DIR, FILE, VerifyBatchBuilder } from '../src/restore/verify-batch.js'

const { values } = parseArgs({ options: { tree: { type: 'string' }, rounds: { type: 'string', default: '2' } } })
if (!values.tree) throw new Error('verify-bench: --tree DIR is required')
const root = resolve(values.tree)
const listing = execFileSync('find', ['.', '-mindepth', '1', '(', '-type', 'f', '-o', '-type', 'd', ')', '-printf', '%y %m %s %P\\n'], { cwd: root, maxBuffer: 1 << 30 }).toString('latin1')
const entries = listing.split('\n').filter(Boolean).map((line) => {
  const [type, mode, size, ...rest] = line.split(' ')
  return { file: type === 'f', mode: parseInt(mode!, 8), size: Number(size), path: `${root}/${rest.join(' ')}` }
})

function inOrder(): void {
  for (const e of entries) {
    const st = lstatSync(Buffer.from(e.path, 'latin1'))
    const ok = e.file ? st.isFile() && st.size === e.size && (st.mode & 0o7777) === e.mode : st.isDirectory() && (st.mode & 0o7777) === e.mode
    if (!ok) throw new Error(`${e.path} differs`)
  }
}

async function onWriterThreads(): Promise<void> {
  const writers = new FileWriters({ threads: DEFAULT_WRITER_THREADS, atime: 0, intoEmptyTree: false })
  const scratch = mkdtempSync(join(tmpdir(), 'verify-bench-'))
  try {
    for (let i = 0; i < 200; i++) {
      writers.begin(`${scratch}/f${i}`, 1, 0o644, 0)
      writers.data(Buffer.from('x'))
      writers.end()
    }
    await writers.drain() // the threads are running, as after an apply's writes
    const batches = new VerifyBatchBuilder(root.length + 1, (batch) => writers.verify(batch))
    for (const e of entries) {
      batches.add(e.path, e.file ? FILE : DIR, e.mode, e.size)
      const room = writers.room()
      if (room) await room
    }
    batches.seal()
    await writers.drain()
  } finally {
    await writers.close()
    rmSync(scratch, { recursive: true, force: true })
  }
}

const ways: Record<string, () => Promise<void> | void> = { 'lstat in order, one thread': inOrder, 'writer threads': onWriterThreads }
for (let round = 0; round < Number(values.rounds); round++) {
  for (const [name, way] of Object.entries(ways)) {
    const t0 = process.hrtime.bigint()
    const cpu0 = process.cpuUsage()
    await way()
    const cpu = process.cpuUsage(cpu0)
    console.log(`${name}: ${entries.length} paths in ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(2)} s, CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s`)
  }
}
