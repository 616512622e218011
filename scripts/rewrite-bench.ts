/**
 * `node dist/scripts/rewrite-bench.js [--files N] [--dir DIR] [--cold]`: what rewriting one in ten
 * of N existing tiny files costs, four ways, on the filesystem of DIR, with the `sync` that
 * follows each way timed apart. It backs the choice in file-batch.ts (openToOverwrite):
 * - O_TRUNC: ext4 flushes a file truncated and written again when it is closed (auto_da_alloc);
 * - in place (write at offset 0, then ftruncate): cheap while the old block is in the page cache,
 *   but when it is not, the kernel reads it before a partial write: a random read per file;
 * - in place in whole 4 KiB pages, zero-padded, then ftruncate (ours): nothing to read first, no
 *   inode freed or allocated;
 * - unlink + O_EXCL create (GNU tar's): a new inode and two directory updates per file.
 * `--cold` (root only) drops the page cache before each way and warms only the metadata (a
 * `find` of the tree, as a replica's trees are warmed in the bench): a replica's file blocks are
 * rarely cached when an hour's change arrives.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, constants as C, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, unlinkSync, writeFileSync, writeSync, ftruncateSync, fstatSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const { values } = parseArgs({ options: { files: { type: 'string', default: '100000' }, dir: { type: 'string', default: tmpdir() }, cold: { type: 'boolean', default: false } } })
const files = Number(values.files)
const root = mkdtempSync(join(values.dir, 'rewrite-bench-'))
const path = (i: number): string => join(root, `d${Math.floor(i / 100)}`, `f${i}`)
const body = (i: number, round: number): Buffer => Buffer.alloc(100 + ((i * 7 + round * 13) % 200), 97 + (round % 26))

const ways: Record<string, (file: string, data: Buffer) => void> = {
  'O_TRUNC + write': (file, data) => {
    const fd = openSync(file, C.O_WRONLY | C.O_CREAT | C.O_TRUNC, 0o644)
    writeSync(fd, data)
    closeSync(fd)
  },
  'in place + ftruncate': (file, data) => {
    const fd = openSync(file, C.O_WRONLY | C.O_CREAT, 0o644)
    writeSync(fd, data, 0, data.length, 0)
    ftruncateSync(fd, data.length)
    closeSync(fd)
  },
  'in place, whole pages (ours)': (file, data) => {
    const page = Buffer.alloc(Math.ceil(data.length / 4096) * 4096)
    data.copy(page)
    const fd = openSync(file, C.O_WRONLY | C.O_CREAT, 0o644)
    writeSync(fd, page, 0, page.length, 0)
    ftruncateSync(fd, data.length)
    closeSync(fd)
  },
  'in place, exact, trim if shorter': (file, data) => {
    const fd = openSync(file, C.O_WRONLY | C.O_NOFOLLOW)
    const old = fstatSync(fd).size
    writeSync(fd, data, 0, data.length, 0)
    if (old > data.length) ftruncateSync(fd, data.length)
    closeSync(fd)
  },
  'temp file + rename': (file, data) => {
    const fd = openSync(`${file}.tmp`, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o644)
    writeSync(fd, data)
    closeSync(fd)
    renameSync(`${file}.tmp`, file)
  },
  'unlink + O_EXCL (GNU tar)': (file, data) => {
    unlinkSync(file)
    const fd = openSync(file, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o644)
    writeSync(fd, data)
    closeSync(fd)
  },
}

const micros = (from: bigint, n: number): string => (Number(process.hrtime.bigint() - from) / 1e3 / n).toFixed(1).padStart(7)

try {
  for (let d = 0; d * 100 < files; d++) mkdirSync(join(root, `d${d}`))
  for (let i = 0; i < files; i++) writeFileSync(path(i), body(i, 0))
  execFileSync('sync')
  let round = 1
  for (const pass of [1, 2]) {
    for (const [name, write] of Object.entries(ways)) {
      if (values.cold) {
        execFileSync('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'])
        execFileSync('find', [root, '-printf', '%s\n'], { stdio: 'ignore', maxBuffer: 1 << 30 })
      }
      let n = 0
      const started = process.hrtime.bigint()
      for (let i = round % 10; i < files; i += 10, n++) write(path(i), body(i, round))
      const writing = micros(started, n)
      const syncing = process.hrtime.bigint()
      execFileSync('sync', ['-f', root])
      process.stdout.write(`pass ${pass}  ${name.padEnd(32)} ${writing} us per file, then sync ${micros(syncing, n)} us per file (${n} files)\n`)
      round++
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true })
}
