import assert from 'node:assert/strict'
import { appendFileSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { TreeDigest } from '../src/core/tree-digest.js'
import { sha256Hex } from '../src/core/sha256.js'
import { scanWholeTree } from '../src/master/build-scan.js'
import { writeFirstFull } from '../src/master/full-archive.js'
import { entryFromIndex } from '../src/master/index-row.js'
import { readIndex } from '../src/master/index-rows.js'
import { SourceReader } from '../src/master/source-reader.js'
import { mtimeFromNs } from '../src/core/mtime.js'

/**
 * A first build keeps its index as rows in buffers (whole-tree-index.ts) and fills the files'
 * hashes in as the archive reads them in path order. Files that move between the scan and the
 * read must end up in the index as they were read, and a file gone must leave no row.
 */
const dir = mkdtempSync(join(tmpdir(), 'first-build-'))
after(() => rmSync(dir, { recursive: true, force: true }))

test('files changed or deleted between scan and read: the index and digest follow what was read', async () => {
  const source = join(dir, 'source')
  const objects = join(dir, 'objects')
  mkdirSync(join(source, 'lists', 'deep'), { recursive: true })
  mkdirSync(objects)
  for (let i = 0; i < 300; i++) writeFileSync(join(source, 'lists', i % 2 ? 'deep' : '', `p${i}.m3u`), `#EXTM3U\nsong-${i}.mp3\n`)
  symlinkSync('lists/p0.m3u', join(source, 'current'))

  const scan = await scanWholeTree(source)
  assert.equal(scan.index.length, 300 + 2 + 1) // files, lists and lists/deep, the link
  appendFileSync(join(source, 'lists', 'p10.m3u'), 'grown after the scan\n')
  unlinkSync(join(source, 'lists', 'deep', 'p11.m3u'))

  const { pair, digest } = await writeFirstFull(objects, 1, { mode: 0o755, mtime: '1700000000.000000000' }, scan, new SourceReader(source))
  assert.equal(pair.entries, 302)
  assert.deepEqual(scan.warnings.map((w) => w.replace(/\(.*\)/, '')), ['skipped "lists/deep/p11.m3u": it changed during the build '])

  const indexFile = join(dir, 'index.bin')
  await scan.index.write(indexFile, 1)
  const rows = await readIndex(indexFile)
  const entries = new Map([...rows.entries()].map(([path, value]) => [path, entryFromIndex(path, value)]))
  assert.equal(entries.size, 302)
  assert.ok(!entries.has('lists/deep/p11.m3u'))
  const grown = readFileSync(join(source, 'lists', 'p10.m3u'))
  const mtimeOf = (p: string): string => mtimeFromNs(lstatSync(join(source, p), { bigint: true }).mtimeNs)
  assert.deepEqual(entries.get('lists/p10.m3u'), { type: 'f', path: 'lists/p10.m3u', mode: 0o644, size: grown.length, mtime: mtimeOf('lists/p10.m3u'), sha256: sha256Hex(grown) })
  assert.match([...rows.entries()].find(([p]) => p === 'lists/p10.m3u')![1], /^f 644 \d+ \d+\.\d{10} racy\t/) // just written: read again next time
  assert.deepEqual(entries.get('current'), { type: 'l', path: 'current', target: 'lists/p0.m3u', mtime: mtimeOf('current') })
  const p2 = readFileSync(join(source, 'lists', 'p2.m3u'))
  assert.equal((entries.get('lists/p2.m3u') as { sha256: string }).sha256, sha256Hex(p2))

  const fromIndex = new TreeDigest()
  fromIndex.addRoot({ mode: 0o755, mtime: '1700000000.000000000' })
  for (const e of entries.values()) fromIndex.add(e)
  assert.equal(digest.toHex(), fromIndex.toHex())
  const files = [...entries.values()].filter((e) => e.type === 'f')
  assert.deepEqual(scan.index.counts(), { files: files.length, dirs: 2, links: 1, bytes: files.reduce((n, e) => n + (e.type === 'f' ? e.size : 0), 0) })
  assert.deepEqual(rows.counts, scan.index.counts())
  scan.index.close()
})

test('a first build whose rows outgrow their buffer and window: every hash lands in its row, the index reads back whole', async () => {
  // 12,000 files: ~1.6 MB of rows, past the 1 MiB append buffer and many 256 KiB windows, their
  // hashes filled in path order while the rows lie in the scan's (readdir) order.
  const source = join(dir, 'many')
  const expected = new Map<string, string>()
  for (let d = 0; d < 40; d++) {
    mkdirSync(join(source, `dir-${d}`, 'sub'), { recursive: true })
    for (let f = 0; f < 300; f++) {
      const path = `dir-${d}/${f % 7 === 0 ? 'sub/' : ''}${'x'.repeat(f % 23)}p${f}.m3u`
      const body = `#EXTM3U ${d} ${f}\n`
      writeFileSync(join(source, path), body)
      expected.set(path, sha256Hex(Buffer.from(body)))
    }
  }
  const scan = await scanWholeTree(source, undefined, dir)
  try {
    const objects = join(dir, 'objects-many')
    mkdirSync(objects)
    const { pair } = await writeFirstFull(objects, 1, { mode: 0o755, mtime: '1700000000.000000000' }, scan, new SourceReader(source))
    assert.equal(pair.entries, 12_000 + 80)
    const indexFile = join(dir, 'index-many.bin')
    await scan.index.write(indexFile, 1)
    const files = new Map<string, string>()
    for (const [path, value] of (await readIndex(indexFile)).entries()) {
      const e = entryFromIndex(path, value)
      if (e.type === 'f') files.set(path, e.sha256)
    }
    assert.deepEqual(new Map([...files].sort()), new Map([...expected].sort()))
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.index-rows.')), [], 'the rows\' file is unlinked as soon as it is made')
  } finally {
    scan.index.close()
  }
})

test('names and link targets that are not UTF-8, or point anywhere, are carried as their bytes', async () => {
  const source = join(dir, 'odd-names')
  mkdirSync(source)
  writeFileSync(join(source, 'a.m3u'), 'a\n')
  symlinkSync(Buffer.from('a.m3u\xfe', 'latin1'), join(source, 'odd'))
  symlinkSync('/etc/passwd', join(source, 'abs'))
  symlinkSync('../../outside', join(source, 'up'))
  writeFileSync(Buffer.from(`${source}/n\xff\\.m3u`, 'latin1'), 'x\n')
  const scan = await scanWholeTree(source)
  assert.deepEqual(scan.warnings, [])
  const byPath = new Map(Array.from({ length: scan.index.length }, (_, n) => [scan.index.path(n), n]))
  assert.deepEqual([...byPath.keys()].sort(), ['a.m3u', 'abs', 'n\xff\\.m3u', 'odd', 'up'])
  assert.equal((scan.index.entry(byPath.get('odd')!) as { target: string }).target, 'a.m3u\xfe')
  assert.equal((scan.index.entry(byPath.get('abs')!) as { target: string }).target, '/etc/passwd')
  scan.index.close()
})
