import assert from 'node:assert/strict'
import { lstatSync, mkdtempSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { statSignature } from '../src/fs/stat-signature.js'
import { SourceReader } from '../src/master/source-reader.js'

/** The build's reader: the scan's signature stands as "before", and the source is left as it was. */
let dir: string
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'snapshot-reader-'))
})
after(() => rmSync(dir, { recursive: true, force: true }))

const sigOf = (path: string): string => statSignature(lstatSync(join(dir, path), { bigint: true }))

test('a read confirms the scan signature and leaves the atime alone', () => {
  writeFileSync(join(dir, 'a.m3u'), 'first\n')
  utimesSync(join(dir, 'a.m3u'), new Date('2001-01-01T00:00:00Z'), new Date()) // atime older than mtime: relatime would update it
  const atime = statSync(join(dir, 'a.m3u')).atimeMs
  const sig = sigOf('a.m3u')
  const r = new SourceReader(dir).read('a.m3u', sig)
  assert.ok('data' in r)
  assert.equal(r.data.toString(), 'first\n')
  assert.equal(r.sig, sig)
  assert.equal(statSync(join(dir, 'a.m3u')).atimeMs, atime)
})

test('a file rewritten after the scan is read whole, with its new signature; a vanished one is gone', () => {
  writeFileSync(join(dir, 'b.m3u'), 'short\n')
  const scanned = sigOf('b.m3u')
  writeFileSync(join(dir, 'b.m3u'), 'a longer line now\n')
  const r = new SourceReader(dir).read('b.m3u', scanned)
  assert.ok('data' in r)
  assert.equal(r.data.toString(), 'a longer line now\n')
  assert.equal(r.sig, sigOf('b.m3u'))
  assert.notEqual(r.sig, scanned)
  unlinkSync(join(dir, 'b.m3u'))
  assert.deepEqual(new SourceReader(dir).read('b.m3u', scanned), { gone: 'ENOENT' })
})
