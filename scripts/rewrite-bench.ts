/**
 * `node dist/scripts/rewrite-bench.js [--files N] [--dir DIR]`: what rewriting an existing tiny
 * file costs, three ways, on the filesystem of DIR. It backs the choice in apply-archive.ts
 * (openForWrite): ext4 flushes a file truncated with O_TRUNC and written again when it is closed
 * (auto_da_alloc), so a replica rewriting 100k playlists pays for 100k small synchronous writes;
 * overwriting in place and trimming with ftruncate does not.
 */
import { closeSync, constants as C, fchmodSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const { values } = parseArgs({ options: { files: { type: 'string', default: '10000' }, dir: { type: 'string', default: tmpdir() } } })
const files = Number(values.files)
const root = mkdtempSync(join(values.dir, 'rewrite-bench-'))
const path = (i: number): string => join(root, String(i % 100), `f${i}`)
const body = (i: number, round: number): Buffer => Buffer.alloc(100 + ((i * 7 + round * 13) % 200), 97 + (round % 26))

const ways: Record<string, (file: string, data: Buffer) => void> = {
  'O_TRUNC + write + fchmod': (file, data) => {
    const fd = openSync(file, C.O_WRONLY | C.O_CREAT | C.O_TRUNC, 0o644)
    writeSync(fd, data)
    fchmodSync(fd, 0o644)
    closeSync(fd)
  },
  'O_TRUNC + write': (file, data) => {
    const fd = openSync(file, C.O_WRONLY | C.O_CREAT | C.O_TRUNC, 0o644)
    writeSync(fd, data)
    closeSync(fd)
  },
  'in place + ftruncate (ours)': (file, data) => {
    const fd = openSync(file, C.O_WRONLY | C.O_CREAT, 0o644)
    writeSync(fd, data, 0, data.length, 0)
    ftruncateSync(fd, data.length)
    closeSync(fd)
  },
}

try {
  for (let d = 0; d < 100; d++) mkdirSync(join(root, String(d)))
  for (let i = 0; i < files; i++) ways['O_TRUNC + write']!(path(i), body(i, 0))
  let round = 1
  for (const pass of [1, 2]) {
    for (const [name, write] of Object.entries(ways)) {
      const started = process.hrtime.bigint()
      for (let i = 0; i < files; i++) write(path(i), body(i, round))
      round++
      const us = Number(process.hrtime.bigint() - started) / 1e3 / files
      process.stdout.write(`pass ${pass}  ${name.padEnd(28)} ${us.toFixed(1).padStart(7)} us per file\n`)
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true })
}
