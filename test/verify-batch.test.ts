import assert from 'node:assert/strict'
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { VerifyError } from '../src/core/errors.js'
import { FileWriters } from '../src/restore/file-writers.js'
import { DIR, FILE, GONE, LINK, VerifyBatchBuilder, verifyBatch, type VerifyBatch } from '../src/restore/verify-batch.js'

/**
 * The check after an apply (verify-batch.ts), on this thread and on the writer threads: a path as
 * the manifest says passes, a file's wrong mode is put right, and anything else (missing, still
 * there, another type or size) fails with the path in the message and, through the pool, as a
 * VerifyError.
 */

function tempRoot(): string {
  return mkdtempSync(join(tmpdir(), 'snapshot-verify-'))
}

function oneBatch(root: string, paths: Array<[string, number, number, number]>): VerifyBatch {
  const batches: VerifyBatch[] = []
  const builder = new VerifyBatchBuilder(root.length + 1, (b) => batches.push(b))
  for (const [rel, expect, mode, size] of paths) builder.add(`${root}/${rel}`, expect, mode, size)
  builder.seal()
  assert.equal(batches.length, 1)
  return batches[0]!
}

describe('verifyBatch', () => {
  test('what the manifest says passes, and a file with other permission bits is given its own', () => {
    const root = tempRoot()
    try {
      mkdirSync(join(root, 'd'), { mode: 0o750 })
      chmodSync(join(root, 'd'), 0o750)
      writeFileSync(join(root, 'd', 'f'), 'five\n')
      chmodSync(join(root, 'd', 'f'), 0o600)
      symlinkSync('d/f', join(root, 'l'))
      writeFileSync(join(root, 'plain'), 'x')
      const failure = verifyBatch(oneBatch(root, [
        ['d', DIR, 0o750, 0],
        ['d/f', FILE, 0o4755, 5],
        ['gone', GONE, 0, 0],
        ['plain/below-a-file', GONE, 0, 0], // ENOTDIR: gone as well
        ['l', LINK, 0, 0],
      ]))
      assert.equal(failure, null)
      assert.equal(lstatSync(join(root, 'd', 'f')).mode & 0o7777, 0o4755)
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  })

  const cases: Array<[string, (root: string) => void, [string, number, number, number], RegExp]> = [
    ['a file that is missing', () => {}, ['f', FILE, 0o644, 1], /^after applying: "f" is missing \(ENOENT\)$/],
    ['a deleted path still there', (r) => writeFileSync(join(r, 'f'), 'x'), ['f', GONE, 0, 0], /^after applying: "f" should be deleted but is still there$/],
    ['a file of another size', (r) => writeFileSync(join(r, 'f'), 'xy'), ['f', FILE, 0o644, 1], /^after applying: "f" is not what the manifest says$/],
    ['a directory where a file should be', (r) => mkdirSync(join(r, 'f')), ['f', FILE, 0o755, 0], /is not what the manifest says/],
    ['a file where a link should be', (r) => writeFileSync(join(r, 'f'), ''), ['f', LINK, 0, 0], /is not what the manifest says/],
    ['a directory with other permission bits (never changed here)', (r) => mkdirSync(join(r, 'f'), { mode: 0o700 }), ['f', DIR, 0o755, 0], /is not what the manifest says/],
  ]
  for (const [what, make, path, message] of cases) {
    test(`fails on ${what}`, () => {
      const root = tempRoot()
      try {
        make(root)
        const failure = verifyBatch(oneBatch(root, [path]))
        assert.ok(failure)
        assert.equal(failure.verify, true)
        assert.equal(failure.path, `${root}/f`)
        assert.match(failure.message, message)
      } finally {
        rmSync(root, { recursive: true, force: true })
      }
    })
  }
})

describe('checks through the writer threads', () => {
  const FILES = 3000 // written through the pool first, so its threads start; then six verify batches
  const populate = async (root: string, writers: FileWriters): Promise<void> => {
    for (let d = 0; d < 10; d++) {
      mkdirSync(join(root, `d${d}`))
      for (let f = 0; f < FILES / 10; f++) {
        const body = Buffer.from(`${d}/${f}\n`)
        writers.begin(`${root}/d${d}/f${f}`, body.length, 0o600, 0)
        writers.data(body)
        writers.end()
      }
    }
    await writers.drain()
  }
  const verifyAll = async (root: string, writers: FileWriters): Promise<void> => {
    const batches = new VerifyBatchBuilder(root.length + 1, (b) => writers.verify(b))
    for (let d = 0; d < 10; d++) {
      for (let f = 0; f < FILES / 10; f++) batches.add(`${root}/d${d}/f${f}`, FILE, 0o644, `${d}/${f}\n`.length)
    }
    batches.seal()
    await writers.drain()
  }

  for (const threads of [0, 1, 4]) {
    test(`${threads} threads: every path checked, every mode put right`, async () => {
      const root = tempRoot()
      const writers = new FileWriters({ threads, atime: 0, intoEmptyTree: false })
      try {
        await populate(root, writers)
        await verifyAll(root, writers)
        for (let d = 0; d < 10; d++) {
          for (let f = 0; f < FILES / 10; f++) assert.equal(lstatSync(join(root, `d${d}`, `f${f}`)).mode & 0o7777, 0o644)
        }
      } finally {
        await writers.close()
        rmSync(root, { recursive: true, force: true })
      }
    })

    test(`${threads} threads: a missing file is thrown as a VerifyError naming it`, async () => {
      const root = tempRoot()
      const writers = new FileWriters({ threads, atime: 0, intoEmptyTree: false })
      try {
        await populate(root, writers)
        rmSync(join(root, 'd7', 'f123'))
        await assert.rejects(verifyAll(root, writers), (err: unknown) => {
          assert.ok(err instanceof VerifyError, String(err))
          assert.equal(err.message, 'after applying: "d7/f123" is missing (ENOENT)')
          return true
        })
      } finally {
        await writers.close()
        rmSync(root, { recursive: true, force: true })
      }
    })
  }
})
