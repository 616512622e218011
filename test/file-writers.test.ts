import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { FileWriters } from '../src/restore/file-writers.js'

/**
 * The writer threads of an apply (file-writers.ts): what they write is exactly what the calling
 * thread would have, whatever stood at a path; a failed write is thrown with the system's code;
 * and nothing is still being written once the pool is closed.
 */

const MTIME = 1_700_000_000.123456 // utimes' value: a whole microsecond, plus half of one below
const EXPECT_MS = 1_700_000_000_123.456

function tempRoot(): string {
  return mkdtempSync(join(tmpdir(), 'snapshot-writers-'))
}

function writeMany(root: string, writers: FileWriters, dirs: number, perDir: number, contents: (d: number, f: number) => Buffer): void {
  for (let d = 0; d < dirs; d++) {
    mkdirSync(join(root, `d${d}`), { recursive: true })
    for (let f = 0; f < perDir; f++) {
      const body = contents(d, f)
      writers.begin(`${root}/d${d}/f${f}`, body.length, 0o640, MTIME)
      // Contents arrive in pieces, as a tar's data does.
      for (let at = 0; at < body.length; at += 7) writers.data(body.subarray(at, at + 7))
      writers.end()
    }
  }
}

const bodyOf = (d: number, f: number): Buffer => Buffer.from(`#EXTM3U\n# ${d}/${f}\n${'x'.repeat((d * 31 + f) % 200)}\n`)

describe('writer threads', () => {
  for (const threads of [0, 1, 4]) {
    test(`${threads} threads: 1,000 files with their contents, mode and mtime`, async () => {
      const root = tempRoot()
      const writers = new FileWriters({ threads, atime: Date.now() / 1000, intoEmptyTree: false })
      try {
        writeMany(root, writers, 10, 100, bodyOf)
        await writers.drain()
        for (let d = 0; d < 10; d++) {
          assert.equal(readdirSync(join(root, `d${d}`)).length, 100)
          for (let f = 0; f < 100; f++) {
            const p = join(root, `d${d}`, `f${f}`)
            assert.deepEqual(readFileSync(p), bodyOf(d, f))
            const st = lstatSync(p)
            assert.equal(st.mode & 0o7777, 0o640 & ~process.umask())
            assert.equal(st.mtimeMs.toFixed(3), EXPECT_MS.toFixed(3))
          }
        }
      } finally {
        await writers.close() // the threads stop: a test that failed does not hang the run
        rmSync(root, { recursive: true, force: true })
      }
    })
  }

  test('whatever stood at a path is replaced, never followed: a file, a symlink to the outside, a directory', async () => {
    const root = tempRoot()
    const outside = tempRoot()
    try {
      // Two batches' worth of files, so the threads start, with three of them in the way.
      const before = new FileWriters({ threads: 0, atime: 0, intoEmptyTree: false })
      writeMany(root, before, 2, 100, () => Buffer.from('old\n'))
      await before.drain()
      writeFileSync(join(outside, 'victim'), 'keep\n')
      rmSync(join(root, 'd0', 'f1'))
      symlinkSync(join(outside, 'victim'), join(root, 'd0', 'f1'))
      rmSync(join(root, 'd1', 'f99'))
      mkdirSync(join(root, 'd1', 'f99', 'deep'), { recursive: true })
      writeFileSync(join(root, 'd1', 'f99', 'deep', 'x'), 'x')

      const writers = new FileWriters({ threads: 2, atime: 0, intoEmptyTree: false })
      try {
        writeMany(root, writers, 2, 100, bodyOf)
        await writers.drain()
      } finally {
        await writers.close()
      }
      assert.equal(readFileSync(join(outside, 'victim'), 'utf8'), 'keep\n')
      assert.ok(lstatSync(join(root, 'd0', 'f1')).isFile())
      assert.deepEqual(readFileSync(join(root, 'd0', 'f1')), bodyOf(0, 1))
      assert.ok(lstatSync(join(root, 'd1', 'f99')).isFile())
      assert.deepEqual(readFileSync(join(root, 'd1', 'f99')), bodyOf(1, 99))
      assert.deepEqual(readFileSync(join(root, 'd0', 'f0')), bodyOf(0, 0))
    } finally {
      rmSync(root, { recursive: true, force: true })
      rmSync(outside, { recursive: true, force: true })
    }
  })

  test('a file of ours alone is written over in place, to its new length; a hard link or a fifo is replaced, never written through', async () => {
    const root = tempRoot()
    const outside = tempRoot()
    try {
      mkdirSync(join(root, 'd'))
      const sizes = [0, 1, 200, 4095, 4096, 4097, 9000, 300, 5]
      const old = (i: number): Buffer => Buffer.alloc([300, 5000, 9000, 0, 4096, 100, 8192, 2, 4097][i]!, 0x61 + i)
      const fresh = (i: number): Buffer => Buffer.alloc(sizes[i]!, 0x41 + i)
      sizes.forEach((_, i) => writeFileSync(join(root, 'd', `f${i}`), old(i)))
      const inodes = sizes.map((_, i) => lstatSync(join(root, 'd', `f${i}`)).ino)
      writeFileSync(join(outside, 'victim'), 'keep\n')
      linkSync(join(outside, 'victim'), join(root, 'd', 'hard'))
      execFileSync('mkfifo', [join(root, 'd', 'fifo')])
      writeFileSync(join(root, 'd', 'readonly'), 'old\n', { mode: 0o444 })

      const writers = new FileWriters({ threads: 1, atime: 0, intoEmptyTree: false })
      const put = (name: string, body: Buffer): void => {
        writers.begin(`${root}/d/${name}`, body.length, 0o644, MTIME)
        writers.data(body)
        writers.end()
      }
      try {
        sizes.forEach((_, i) => put(`f${i}`, fresh(i)))
        put('hard', Buffer.from('new\n'))
        put('fifo', Buffer.from('not blocked\n'))
        put('readonly', Buffer.from('new\n'))
        await writers.drain()
      } finally {
        await writers.close()
      }
      sizes.forEach((_, i) => {
        const p = join(root, 'd', `f${i}`)
        assert.deepEqual(readFileSync(p), fresh(i), `f${i}: ${old(i).length} bytes before, ${sizes[i]} after`)
        assert.equal(lstatSync(p).ino, inodes[i], `f${i} was written in place`)
        assert.equal(lstatSync(p).mtimeMs.toFixed(3), EXPECT_MS.toFixed(3))
      })
      assert.equal(readFileSync(join(outside, 'victim'), 'utf8'), 'keep\n')
      assert.equal(lstatSync(join(root, 'd', 'hard')).nlink, 1)
      assert.equal(readFileSync(join(root, 'd', 'hard'), 'utf8'), 'new\n')
      assert.ok(lstatSync(join(root, 'd', 'fifo')).isFile())
      assert.equal(readFileSync(join(root, 'd', 'fifo'), 'utf8'), 'not blocked\n')
      assert.equal(readFileSync(join(root, 'd', 'readonly'), 'utf8'), 'new\n')
    } finally {
      rmSync(root, { recursive: true, force: true })
      rmSync(outside, { recursive: true, force: true })
    }
  })

  for (const threads of [0, 3]) {
    test(`${threads} threads: a write that fails is thrown with the system's code and path, and close waits for every thread`, async () => {
      const root = tempRoot()
      const writers = new FileWriters({ threads, atime: 0, intoEmptyTree: true })
      try {
        writeMany(root, writers, 3, 100, bodyOf)
        // A file in a directory that does not exist: open fails with ENOENT.
        writers.begin(`${root}/missing/f`, 3, 0o644, MTIME)
        writers.data(Buffer.from('abc'))
        writers.end()
        writeMany(root, writers, 5, 100, bodyOf) // more after it: none may be lost silently either way
        await assert.rejects(writers.drain(), (err: NodeJS.ErrnoException & { path?: string }) => {
          assert.equal(err.code, 'ENOENT')
          assert.equal(err.path, `${root}/missing/f`)
          return true
        })
        await writers.close()
        // After close nothing is written any more: the tree stays as it is now.
        const count = (): number => readdirSync(root).reduce((n, d) => n + readdirSync(join(root, d)).length, 0)
        const now = count()
        await new Promise((r) => setTimeout(r, 50))
        assert.equal(count(), now)
        assert.ok(readdirSync(join(root, 'd0')).length > 0)
      } finally {
        await writers.close()
        rmSync(root, { recursive: true, force: true })
      }
    })
  }

  test('unlinks: a file, and a symlink as itself (its target stays); a path already gone is no error; a directory is left, and named', async () => {
    const root = tempRoot()
    const outside = tempRoot()
    const writers = new FileWriters({ threads: 2, atime: 0, intoEmptyTree: false })
    try {
      const before = new FileWriters({ threads: 0, atime: 0, intoEmptyTree: false })
      writeMany(root, before, 3, 100, bodyOf)
      await before.drain()
      writeFileSync(join(outside, 'victim'), 'keep\n')
      symlinkSync(join(outside, 'victim'), join(root, 'd2', 'link'))
      for (let f = 0; f < 100; f++) writers.unlink(`${root}/d0/f${f}`)
      writers.unlink(`${root}/d2/link`)
      writers.unlink(`${root}/d2/never-was`)
      writers.unlink(`${root}/d1`)
      assert.deepEqual(await writers.drain(), [`${root}/d1`])
      assert.deepEqual(await writers.drain(), []) // named once
      assert.deepEqual(readdirSync(join(root, 'd0')), [])
      assert.equal(readdirSync(join(root, 'd1')).length, 100)
      assert.equal(readdirSync(join(root, 'd2')).length, 100)
      assert.equal(readFileSync(join(outside, 'victim'), 'utf8'), 'keep\n')
    } finally {
      await writers.close()
      rmSync(root, { recursive: true, force: true })
      rmSync(outside, { recursive: true, force: true })
    }
  })

  test('a full disk: the threads\' ENOSPC is thrown as the system gave it (the pull maps it to exit 5)', async (t) => {
    const root = tempRoot()
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0755', 'tmpfs', root], { encoding: 'utf8' })
    if (r.status !== 0) {
      rmSync(root, { recursive: true, force: true })
      return t.skip(`cannot mount a small tmpfs here (${(r.stderr || '').trim()}): needs root or CAP_SYS_ADMIN`)
    }
    const writers = new FileWriters({ threads: 2, atime: 0, intoEmptyTree: true })
    try {
      for (let d = 0; d < 20; d++) mkdirSync(join(root, `d${d}`)) // before any file fills it
      writeMany(root, writers, 20, 100, bodyOf) // a page each: ~8 MB into 256 KiB
      await assert.rejects(writers.drain(), (err: NodeJS.ErrnoException) => err.code === 'ENOSPC')
    } finally {
      await writers.close()
      spawnSync('umount', [root])
      rmSync(root, { recursive: true, force: true })
    }
  })

  test('a file larger than a batch is not taken: the apply writes it itself', () => {
    const writers = new FileWriters({ threads: 2, atime: 0, intoEmptyTree: false })
    assert.equal(writers.takes('/r/a', 300), true)
    assert.equal(writers.takes('/r/a', 1 << 20), false)
  })
})
