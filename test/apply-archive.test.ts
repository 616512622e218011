import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { chmodSync, existsSync, linkSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { SnapshotError, VerifyError } from '../src/core/errors.js'
import { digestOf } from '../src/core/tree-digest.js'
import { applyArchive } from '../src/restore/apply-archive.js'
import { ManifestCursor } from '../src/restore/manifest-cursor.js'
import {
  delLine,
  deltaManifest,
  dLine,
  fingerprint,
  fingerprintDiff,
  fLine, MT,
  HOSTILE_ARCHIVES,
  lLine,
  manifestOf,
  sha256,
  tarDir,
  tarFile,
  tarLink,
  tarOf,
  type HostileArchive,
  type Places,
} from './helpers/hostile-store.js'
import { writeTree } from './helpers/tree.js'

/**
 * Every hostile archive of the shared table, applied directly to a staging root that holds the
 * base tree (test/hostile.test.ts runs a share of them end to end through the CLI), whole and cut
 * into 7-byte pieces; then what only a tree left dirty by a crash can hold: links to the outside
 * already in the staging tree. Nothing outside the root may change.
 */

const BASE = { 'dir/a.m3u': 'a\n', 'dir/sub/b.m3u': 'b\n', 'links/to-dir': { link: '../dir' }, 'top.m3u': 'top\n', 'zz.m3u': 'zz\n' } as const

interface Work extends Places {
  readonly work: string
  readonly root: string
  /** Everything outside the root, before the apply. */
  readonly before: Map<string, string>
}

function newWork(extra: (w: { root: string; outside: string }) => void = () => undefined): Work {
  const work = mkdtempSync(join(tmpdir(), 'snapshot-apply-'))
  const root = join(work, 'root')
  const outside = join(work, 'outside')
  writeTree(root, BASE)
  writeTree(work, { 'outside/victim.txt': 'must stay\n', 'outside/sub/keep.txt': 'keep\n', 'sentinel.txt': 'beside the root\n' })
  extra({ root, outside })
  return { work, root, outside, tmpTarget: join(tmpdir(), `snapshot-apply-outside-${randomUUID()}`), before: fingerprint(work, [root]) }
}

function assertOutsideUntouched(w: Work): void {
  assert.deepEqual(fingerprintDiff(w.before, fingerprint(w.work, [w.root])), [], 'something outside the staging root changed')
  assert.equal(existsSync(w.tmpTarget), false, `${w.tmpTarget} appeared`)
}

async function* piecesOf(buf: Buffer, piece: number): AsyncGenerator<Buffer> {
  for (let o = 0; o < buf.length; o += piece) yield buf.subarray(o, o + piece)
}

/** Whole, or with the archive cut into pieces and the manifest streamed in 5-byte pieces (as a pull reads it). */
async function apply(root: string, manifest: Buffer, tar: Buffer, tarBytes = tar.length, piece = tar.length || 1): Promise<void> {
  const cursor = piece < tar.length ? await ManifestCursor.open(() => piecesOf(manifest, 5), 1 << 20, 'the manifest') : new ManifestCursor(manifest)
  await applyArchive({ root, manifest: cursor, tarChunks: piecesOf(tar, piece), tarBytes })
}

async function expectRefused(h: Pick<HostileArchive, 'code' | 'message'>, w: Work, manifest: Buffer, tar: Buffer, tarBytes?: number, piece?: number): Promise<void> {
  await assert.rejects(
    apply(w.root, manifest, tar, tarBytes, piece),
    (err: unknown) => {
      assert.ok(err instanceof SnapshotError, `not a SnapshotError: ${String(err)}`)
      assert.equal(err.exitCode, h.code, `${err.code}: ${err.message}`)
      assert.match(err.message, h.message)
      return true
    },
  )
  assertOutsideUntouched(w)
}

describe('applyArchive refuses every hostile archive of the table', () => {
  for (const h of HOSTILE_ARCHIVES) {
    test(h.name, async () => {
      for (const piece of [undefined, 7]) {
        const w = newWork()
        try {
          const { tar, manifest, tarBytes } = h.make(w)
          await expectRefused(h, w, manifest, tar, tarBytes, piece)
        } finally {
          rmSync(w.work, { recursive: true, force: true })
        }
      }
    })
  }
})

/** Cases of a staging tree left dirty (by a crash, or by an earlier refused archive) with links to the outside. */
describe('applyArchive never writes through what a dirty staging tree holds', () => {
  const withWork = (extra: (w: { root: string; outside: string }) => void, body: (w: Work) => Promise<void>) => async () => {
    const w = newWork(extra)
    try {
      await body(w)
    } finally {
      rmSync(w.work, { recursive: true, force: true })
    }
  }

  test(
    'refuses a file below a leftover symlink to an absolute outside directory',
    withWork(
      ({ root, outside }) => symlinkSync(outside, join(root, 'l')),
      (w) => expectRefused({ code: 6, message: /"l" is not a real directory: refusing to write through it/ }, w, deltaManifest([fLine('l/victim.txt', 'pwned\n')]), tarOf(tarFile('l/victim.txt', 'pwned\n'))),
    ),
  )
  test(
    "refuses a file below a leftover symlink '../outside'",
    withWork(
      ({ root }) => symlinkSync('../outside', join(root, 'l')),
      (w) => expectRefused({ code: 6, message: /"l" is not a real directory/ }, w, deltaManifest([fLine('l/sub/new', 'x')]), tarOf(tarFile('l/sub/new', 'x'))),
    ),
  )
  test(
    'refuses a file below a leftover regular file',
    withWork(
      () => undefined,
      (w) => expectRefused({ code: 6, message: /"top\.m3u" is not a real directory/ }, w, deltaManifest([fLine('top.m3u/x', 'x')]), tarOf(tarFile('top.m3u/x', 'x'))),
    ),
  )

  test(
    'replaces a leftover symlink to an outside file with the file, without writing through it',
    withWork(
      ({ root, outside }) => symlinkSync(join(outside, 'victim.txt'), join(root, 'victim')),
      async (w) => {
        await apply(w.root, deltaManifest([fLine('victim', 'mine\n')]), tarOf(tarFile('victim', 'mine\n')))
        assert.ok(lstatSync(join(w.root, 'victim')).isFile())
        assert.equal(readFileSync(join(w.root, 'victim'), 'utf8'), 'mine\n')
        assertOutsideUntouched(w)
      },
    ),
  )
  test(
    'replaces a file that shares its inode with an outside file (a hard link) without writing into that inode',
    withWork(
      ({ root, outside }) => {
        rmSync(join(root, 'top.m3u'))
        linkSync(join(outside, 'victim.txt'), join(root, 'top.m3u'))
      },
      async (w) => {
        await apply(w.root, deltaManifest([fLine('top.m3u', 'new top\n')]), tarOf(tarFile('top.m3u', 'new top\n')))
        assert.equal(readFileSync(join(w.root, 'top.m3u'), 'utf8'), 'new top\n')
        assert.equal(lstatSync(join(w.root, 'top.m3u')).nlink, 1)
        assertOutsideUntouched(w)
      },
    ),
  )
  test(
    'replaces a leftover symlink to an outside directory with a real directory, without chmod through it',
    withWork(
      ({ root, outside }) => symlinkSync(outside, join(root, 'd')),
      async (w) => {
        await apply(w.root, deltaManifest([dLine('d', 0o700), fLine('d/f', 'f')]), tarOf(tarDir('d', 0o700), tarFile('d/f', 'f')))
        assert.ok(lstatSync(join(w.root, 'd')).isDirectory())
        assert.equal(statSync(w.outside).mode & 0o777, 0o755)
        assertOutsideUntouched(w)
      },
    ),
  )
  test(
    'replaces a leftover symlink to an outside directory with a safe symlink',
    withWork(
      ({ root, outside }) => symlinkSync(outside, join(root, 'l')),
      async (w) => {
        await apply(w.root, deltaManifest([lLine('l', 'dir')]), tarOf(tarLink('l', 'dir')))
        assert.equal(readlinkSync(join(w.root, 'l')), 'dir')
        assertOutsideUntouched(w)
      },
    ),
  )
  test(
    'a deletion below a leftover symlink to the outside deletes nothing through it',
    withWork(
      ({ root, outside }) => symlinkSync(outside, join(root, 'p')),
      async (w) => {
        await apply(w.root, deltaManifest([delLine('p/victim.txt'), delLine('p/sub')]), tarOf())
        assertOutsideUntouched(w)
      },
    ),
  )
  test(
    'a deletion of a leftover symlink to an outside directory removes the link only',
    withWork(
      ({ root, outside }) => symlinkSync(outside, join(root, 'p')),
      async (w) => {
        await apply(w.root, deltaManifest([delLine('p')]), tarOf())
        assert.equal(existsSync(join(w.root, 'p')), false)
        assertOutsideUntouched(w)
      },
    ),
  )
})

test('a directory replaced by a symlink to a directory with the same names applies and verifies', async () => {
  // The master deletes 'dir/a.m3u' and publishes 'dir' as a link to 'other', which also holds an
  // 'a.m3u': after applying, 'dir/a.m3u' resolves through the link, yet it is gone from the tree.
  const w = newWork(({ root }) => writeTree(root, { 'other/a.m3u': 'other a\n', 'other/sub/b.m3u': 'other b\n' }))
  try {
    await apply(w.root, deltaManifest([delLine('dir/sub/b.m3u'), delLine('dir/sub'), delLine('dir/a.m3u'), lLine('dir', 'other')]), tarOf(tarLink('dir', 'other')))
    assert.equal(readlinkSync(join(w.root, 'dir')), 'other')
    assert.equal(readFileSync(join(w.root, 'dir/a.m3u'), 'utf8'), 'other a\n')
    assertOutsideUntouched(w)
  } finally {
    rmSync(w.work, { recursive: true, force: true })
  }
})

test('NFC and NFD spellings are two names, both applied', async () => {
  const w = newWork()
  try {
    await apply(w.root, deltaManifest([fLine('cafe\u0301.m3u', 'nfd\n'), fLine('caf\u00e9.m3u', 'nfc\n')]), tarOf(tarFile('cafe\u0301.m3u', 'nfd\n'), tarFile('caf\u00e9.m3u', 'nfc\n')), undefined, 7)
    assert.equal(readFileSync(join(w.root, 'caf\u00e9.m3u'), 'utf8'), 'nfc\n')
    assert.equal(readFileSync(join(w.root, 'cafe\u0301.m3u'), 'utf8'), 'nfd\n')
  } finally {
    rmSync(w.work, { recursive: true, force: true })
  }
})

describe('a full archive: its bytes, hashed as written, must add up to the signed tree digest', () => {
  const FULL = [dLine('d', 0o750), fLine('d/f.m3u', 'full\n', 0o640), lLine('l', 'd/f.m3u')]
  const tar = (content: string): Buffer => tarOf(tarDir('d', 0o750), tarFile('d/f.m3u', content, { mode: 0o640 }), tarLink('l', 'd/f.m3u'))
  const signed = digestOf([
    { type: 'd', path: 'd', mode: 0o750, mtime: MT },
    { type: 'f', path: 'd/f.m3u', mode: 0o640, size: 5, mtime: MT, sha256: sha256('full\n') },
    { type: 'l', path: 'l', target: 'd/f.m3u', mtime: MT },
  ], { mode: 0o755, mtime: MT })
  const applyFull = (root: string, content: string, piece?: number): Promise<unknown> => {
    const t = tar(content)
    async function* chunks(): AsyncGenerator<Buffer> {
      for (let o = 0; o < t.length; o += piece ?? t.length) yield t.subarray(o, o + (piece ?? t.length))
    }
    return applyArchive({ root, manifest: new ManifestCursor(manifestOf({ id: 1, kind: 'full', base: null }, FULL)), tarChunks: chunks(), tarBytes: t.length, expectDigest: signed })
  }

  for (const piece of [undefined, 7]) {
    test(`the true bytes are accepted${piece ? ' (in 7-byte pieces)' : ''}`, async () => {
      const root = mkdtempSync(join(tmpdir(), 'snapshot-apply-full-'))
      try {
        await applyFull(root, 'full\n', piece)
        assert.equal(readFileSync(join(root, 'd/f.m3u'), 'utf8'), 'full\n')
      } finally {
        rmSync(root, { recursive: true, force: true })
      }
    })
    test(`other bytes of the same size are refused, though the manifest agrees on path, size and mode${piece ? ' (in 7-byte pieces)' : ''}`, async () => {
      const root = mkdtempSync(join(tmpdir(), 'snapshot-apply-full-'))
      try {
        await assert.rejects(applyFull(root, 'evil\n', piece), (err: unknown) => {
          assert.ok(err instanceof VerifyError, String(err))
          assert.equal(err.exitCode, 3)
          assert.match(err.message, /the full archive adds up to tree digest [0-9a-f]{64}, the signed record says [0-9a-f]{64}/)
          return true
        })
      } finally {
        rmSync(root, { recursive: true, force: true })
      }
    })
  }
})

describe('modes are exact after an apply, though files are written without fchmod', () => {
  test('a umask that masks bits, an existing file with another mode, and a leftover setuid bit', async () => {
    const w = newWork(({ root }) => {
      writeTree(root, { 'keep-old.m3u': 'old contents\n', 'suid.bin': 'old\n' })
      chmodSync(join(root, 'keep-old.m3u'), 0o600)
      chmodSync(join(root, 'suid.bin'), 0o4755)
      chmodSync(join(root, 'top.m3u'), 0o640)
    })
    const umask = process.umask(0o077) // creation drops group and other bits: verification restores them
    try {
      const lines = [fLine('g+w.m3u', 'shared\n', 0o664), fLine('keep-old.m3u', 'new\n', 0o644), fLine('new.m3u', 'new\n', 0o600), fLine('sticky', 's', 0o1755), fLine('suid.bin', 'new\n', 0o755), fLine('top.m3u', 'top\n', 0o444), fLine('x.sh', '#!/bin/sh\n', 0o755)]
      const tar = tarOf(
        tarFile('g+w.m3u', 'shared\n', { mode: 0o664 }),
        tarFile('keep-old.m3u', 'new\n', { mode: 0o644 }),
        tarFile('new.m3u', 'new\n', { mode: 0o600 }),
        tarFile('sticky', 's', { mode: 0o1755 }),
        tarFile('suid.bin', 'new\n', { mode: 0o755 }),
        tarFile('top.m3u', 'top\n', { mode: 0o444 }),
        tarFile('x.sh', '#!/bin/sh\n', { mode: 0o755 }),
      )
      await apply(w.root, deltaManifest(lines), tar)
      const modes = Object.fromEntries(lines.map((l) => [l.p as string, (lstatSync(join(w.root, l.p as string)).mode & 0o7777).toString(8)]))
      assert.deepEqual(modes, Object.fromEntries(lines.map((l) => [l.p as string, (l.m as number).toString(8)])))
      assert.equal(readFileSync(join(w.root, 'keep-old.m3u'), 'utf8'), 'new\n')
      assertOutsideUntouched(w)
    } finally {
      process.umask(umask)
      rmSync(w.work, { recursive: true, force: true })
    }
  })
})

describe('deletions go to the writer threads; a directory among them is removed after what was in it', () => {
  test('an album of 300 files with a subdirectory, and a directory holding a file no line names', async () => {
    const album: Record<string, string> = {}
    for (let i = 0; i < 300; i++) album[`album/${String(i).padStart(3, '0')}.m3u`] = `${i}\n`
    const w = newWork(({ root }) => writeTree(root, { ...album, 'album/sub/deep.m3u': 'deep\n', 'stray/unlisted.m3u': 'x\n', 'keep/k.m3u': 'k\n' }))
    try {
      // Descending, children first, as a build lists them; 'stray/unlisted.m3u' is not listed.
      const deleted = ['stray', 'album/sub/deep.m3u', 'album/sub', ...Object.keys(album).reverse(), 'album']
      await apply(w.root, deltaManifest([...deleted.map(delLine), fLine('new.m3u', 'new\n')]), tarOf(tarFile('new.m3u', 'new\n')))
      assert.equal(existsSync(join(w.root, 'album')), false)
      assert.equal(existsSync(join(w.root, 'stray')), false)
      assert.equal(readFileSync(join(w.root, 'keep/k.m3u'), 'utf8'), 'k\n')
      assert.equal(readFileSync(join(w.root, 'new.m3u'), 'utf8'), 'new\n')
      assert.equal(readFileSync(join(w.root, 'dir/sub/b.m3u'), 'utf8'), 'b\n')
      assertOutsideUntouched(w)
    } finally {
      rmSync(w.work, { recursive: true, force: true })
    }
  })
})
