import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, test } from 'node:test'
import { MAX_FILE_BYTES, MIN_FILE_BYTES, generateCorpus, listTree, mutateCorpus } from '../scripts/corpus.js'

/** path -> sha256 of content, for every file of a tree. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const f of listTree(root).files) out.set(f, createHash('sha256').update(readFileSync(join(root, f))).digest('hex'))
  return out
}

describe('synthetic corpus', () => {
  const FILES = 2000
  let dir: string
  const at = (name: string): string => join(dir, name)

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-corpus-'))
    await generateCorpus({ files: FILES, out: at('a'), seed: 7 })
    await generateCorpus({ files: FILES, out: at('b'), seed: 7 })
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  test('the same seed gives the same paths and bytes', () => {
    const a = snapshot(at('a'))
    assert.equal(a.size, FILES)
    assert.deepEqual(snapshot(at('b')), a)
  })

  test('another seed gives another corpus', async () => {
    await generateCorpus({ files: FILES, out: at('other'), seed: 8 })
    assert.notDeepEqual(snapshot(at('other')), snapshot(at('a')))
  })

  test('the layout looks like a playlist library', () => {
    const { files, dirs } = listTree(at('a'))
    for (const f of files) assert.match(f, /^[a-z-]+(-\d+)?\/album-\d{3}\/playlist-\d{5}\.m3u$/)
    const perDir = new Map<string, number>()
    for (const f of files) perDir.set(f.slice(0, f.lastIndexOf('/')), (perDir.get(f.slice(0, f.lastIndexOf('/'))) ?? 0) + 1)
    for (const n of perDir.values()) assert.ok(n <= 130, `an album of ${n} files`)
    assert.ok(dirs.length >= perDir.size)
  })

  test('every file is 100-300 bytes of m3u text', () => {
    const sizes = listTree(at('a')).files.map((f) => statSync(join(at('a'), f)).size)
    for (const s of sizes) assert.ok(s >= MIN_FILE_BYTES && s <= MAX_FILE_BYTES, `size ${s}`)
    assert.ok(Math.min(...sizes) < 120 && Math.max(...sizes) > 280, 'sizes spread over the range')
    const text = readFileSync(join(at('a'), listTree(at('a')).files[0]!), 'utf8')
    assert.match(text, /^#EXTM3U\n#PLAYLIST:/)
    assert.ok(text.endsWith('\n'))
  })

  test('generation refuses a directory that is not empty', async () => {
    await assert.rejects(generateCorpus({ files: 10, out: at('a') }), { code: 'ERR_USAGE' })
  })

  test('a mutation changes about the right counts, deterministically', async () => {
    const before = snapshot(at('a'))
    const ra = await mutateCorpus({ out: at('a'), seed: 3 })
    const rb = await mutateCorpus({ out: at('b'), seed: 3 })
    assert.deepEqual({ ...rb, seconds: 0 }, { ...ra, seconds: 0 })
    const after = snapshot(at('a'))
    assert.deepEqual(snapshot(at('b')), after)

    const deleted = [...before.keys()].filter((p) => !after.has(p))
    const added = [...after.keys()].filter((p) => !before.has(p))
    const modified = [...before.keys()].filter((p) => after.has(p) && after.get(p) !== before.get(p))
    assert.equal(deleted.length, 10)
    assert.equal(added.length, 10)
    assert.equal(modified.length, 200)
    assert.deepEqual([ra.modified, ra.deleted, ra.added, ra.files], [200, 10, 10, FILES])
    for (const p of [...added, ...modified]) {
      const s = statSync(join(at('a'), p)).size
      assert.ok(s >= MIN_FILE_BYTES && s <= MAX_FILE_BYTES, `size ${s}`)
    }
    assert.equal(listTree(at('a')).files.some((f) => f.endsWith('.tmp')), false)
  })

  test('a mutation keeps the size of some modified files', async () => {
    await generateCorpus({ files: FILES, out: at('c'), seed: 11 })
    const sizes = new Map(listTree(at('c')).files.map((f) => [f, statSync(join(at('c'), f)).size]))
    const before = snapshot(at('c'))
    await mutateCorpus({ out: at('c'), seed: 11 })
    const after = snapshot(at('c'))
    const modified = [...before.keys()].filter((p) => after.has(p) && after.get(p) !== before.get(p))
    const kept = modified.filter((p) => statSync(join(at('c'), p)).size === sizes.get(p))
    assert.ok(kept.length >= 0.2 * modified.length && kept.length <= 0.45 * modified.length, `${kept.length} of ${modified.length} kept their size`)
  })

  test('successive mutations with one seed touch different files', async () => {
    const s0 = snapshot(at('b'))
    await mutateCorpus({ out: at('b'), seed: 3 })
    const s1 = snapshot(at('b'))
    await mutateCorpus({ out: at('b'), seed: 3 })
    const s2 = snapshot(at('b'))
    const changed = (x: Map<string, string>, y: Map<string, string>): Set<string> =>
      new Set([...x.keys()].filter((p) => y.has(p) && y.get(p) !== x.get(p)))
    const first = changed(s0, s1)
    const second = changed(s1, s2)
    const both = [...second].filter((p) => first.has(p)).length
    assert.ok(both < 0.3 * second.size, `${both} of ${second.size} files changed in both hours`)
  })

  test('npm run corpus works through a symlinked checkout (it once exited 0 having written nothing)', () => {
    const scripts = join(dirname(fileURLToPath(import.meta.url)), '../scripts')
    symlinkSync(scripts, at('linked-scripts'))
    const out = execFileSync(process.execPath, [join(at('linked-scripts'), 'corpus.js'), '--files', '300', '--out', at('via-link')], { encoding: 'utf8' })
    assert.equal(JSON.parse(out).files, 300)
    assert.equal(listTree(at('via-link')).files.length, 300)
  })
})
