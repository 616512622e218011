import { spawnSync } from 'node:child_process'
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import fc from 'fast-check'
import { byteStringOf } from '../../src/core/byte-path.js'

/**
 * Random trees and random edits of a master's tree, for the property test. Edits are drawn as
 * data with "pick" numbers, resolved against what the tree holds when they are applied (pick
 * modulo the candidates), so any sequence is applicable and fast-check can shrink it freely.
 * Names and paths are byte strings (src/core/byte-path.ts), as the product handles them, so that
 * names that are not UTF-8 are exercised too; the file system gets them as Buffers.
 */

/** A tree path (a byte string) under root (an ASCII path) as a Buffer for the fs module. */
function under(root: string, path: string): Buffer {
  return Buffer.from(path ? `${root}/${path}` : root, 'latin1')
}

export const FILE_MODES = [0o644, 0o600, 0o755] as const
export const DIR_MODES = [0o755, 0o700, 0o750] as const

/** Names that broke tools before: spaces, quotes, newlines, both Unicode normal forms of one word. */
const ODD_NAMES = [
  'a',
  'b',
  'plain.m3u',
  'with space',
  ' leading and trailing ',
  '"quoted"',
  "it's",
  'new\nline',
  'tab\there',
  'caf\u00e9', // NFC
  'cafe\u0301', // NFD: another name on Linux
  '日本語',
  '😀.m3u',
  '.hidden',
  '-dash',
  '$HOME*?[x]',
  'L'.repeat(255), // NAME_MAX in bytes
  'odd\\back\\slash.m3u',
  '\\',
].map(byteStringOf)

/** Names that are not UTF-8: legal on Linux, carried byte for byte. */
const BYTE_NAMES = ['b\xff\xfe', 'caf\xe9 latin-1', '\xc3\x28', '\x80', 'trail\xed\xa0\x80']

/** Characters for generated names: controls, combining marks, bidi overrides, astral planes. */
const NAME_CHARS = ['a', 'Z', '0', ' ', '\n', '\t', '\r', '\x01', '\x7f', '"', "'", '$', '*', '?', '#', '~', '-', '.', 'é', 'e\u0301', '\u200b', '\u202e', 'ß', '日', '😀', '\u{10ffff}']

/** What Linux allows in a name (a byte string): no '/' or NUL, not '.' or '..', at most 255 bytes. */
export function isValidName(name: string): boolean {
  if (name === '' || name === '.' || name === '..') return false
  return !/[/\0]/.test(name) && name.length <= 255
}

export const nameArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...ODD_NAMES) },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: 1, maxLength: 6 }).map(byteStringOf).filter(isValidName) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 4 }).map(byteStringOf).filter(isValidName) },
  { weight: 2, arbitrary: fc.constantFrom(...BYTE_NAMES) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 5 }).map((b) => Buffer.from(b).toString('latin1')).filter(isValidName) },
)

/** Small contents, now and then a larger one that spans tar blocks and zstd windows. */
export interface ContentSpec {
  readonly text: string
  readonly repeat: number
}
export const contentArb: fc.Arbitrary<ContentSpec> = fc.record({
  text: fc.string({ unit: 'binary', maxLength: 24 }),
  repeat: fc.oneof({ weight: 9, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 2, max: 4000 }) }),
})
export function contentBytes(c: ContentSpec): Buffer {
  return Buffer.from(c.text.repeat(c.repeat), 'utf8')
}

/** A symlink target: absolute, or up to `climbs` '..' (out of the tree, too), then names. */
export interface LinkSpec {
  readonly absolute: boolean
  readonly climbs: number
  readonly names: readonly string[]
}
export const linkArb: fc.Arbitrary<LinkSpec> = fc.record({ absolute: fc.boolean(), climbs: fc.nat(4), names: fc.array(nameArb, { minLength: 1, maxLength: 2 }) })

export type NodeSpec =
  | { readonly kind: 'file'; readonly content: ContentSpec; readonly mode: number }
  | { readonly kind: 'dir'; readonly mode: number }
  | { readonly kind: 'link'; readonly link: LinkSpec }

export const nodeArb: fc.Arbitrary<NodeSpec> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('file' as const), content: contentArb, mode: fc.constantFrom(...FILE_MODES) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('dir' as const), mode: fc.constantFrom(...DIR_MODES) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('link' as const), link: linkArb }) },
)

export interface TreeEntrySpec {
  readonly segments: readonly string[]
  readonly node: NodeSpec
}
/** A tree: entries at up to three levels; intermediate directories are made as needed. */
export const treeArb: fc.Arbitrary<readonly TreeEntrySpec[]> = fc.array(fc.record({ segments: fc.array(nameArb, { minLength: 1, maxLength: 3 }), node: nodeArb }), {
  maxLength: 16,
})

/** Paths stay well inside the limits the master enforces, so it never has to skip one. */
const MAX_TEST_PATH_BYTES = 3000
const MAX_TEST_DEPTH = 8

/** Carried verbatim, wherever it points: absolute, outside the tree, dangling. */
export function linkTarget(_linkPath: string, spec: LinkSpec): string {
  return (spec.absolute ? '/' : '../'.repeat(spec.climbs)) + spec.names.join('/')
}

function makeNode(root: string, path: string, node: NodeSpec): void {
  const abs = under(root, path)
  if (node.kind === 'file') {
    writeFileSync(abs, contentBytes(node.content))
    chmodSync(abs, node.mode)
  } else if (node.kind === 'dir') {
    mkdirSync(abs)
    chmodSync(abs, node.mode)
  } else symlinkSync(Buffer.from(linkTarget(path, node.link), 'latin1'), abs)
}

function fits(path: string): boolean {
  return path.length <= MAX_TEST_PATH_BYTES && path.split('/').length <= MAX_TEST_DEPTH
}

/**
 * Writes the tree; an entry whose parent is not a directory, or whose path is taken, is left out.
 * Files get old whole-second mtimes, as in a real tree: a same-size edit that sets the mtime back
 * is then not "racy" (recent) and only its ctime can betray it.
 */
export function materialize(root: string, tree: readonly TreeEntrySpec[]): void {
  mkdirSync(root, { recursive: true })
  let age = 0
  for (const { segments, node } of tree) {
    const path = segments.join('/')
    if (!fits(path)) continue
    let ok = true
    for (let i = 1; i < segments.length && ok; i++) {
      const dir = segments.slice(0, i).join('/')
      const st = lstatSync(under(root, dir), { throwIfNoEntry: false })
      if (!st) mkdirSync(under(root, dir))
      else if (!st.isDirectory()) ok = false
    }
    if (!ok || lstatSync(under(root, path), { throwIfNoEntry: false })) continue
    makeNode(root, path, node)
    if (node.kind === 'file') utimesSync(under(root, path), 1_700_000_000 + age, 1_700_000_000 + age++)
  }
}

export interface Entry {
  readonly path: string
  readonly type: 'file' | 'dir' | 'link'
}

/** Every entry under root, in a stable order (readdir order depends on the filesystem). */
export function listEntries(root: string): Entry[] {
  const out: Entry[] = []
  const walk = (rel: string): void => {
    for (const name of readdirSync(under(root, rel), { encoding: 'buffer' }).map((b) => b.toString('latin1')).sort()) {
      const path = rel ? `${rel}/${name}` : name
      const st = lstatSync(under(root, path))
      if (st.isSymbolicLink()) out.push({ path, type: 'link' })
      else if (st.isDirectory()) {
        out.push({ path, type: 'dir' })
        walk(path)
      } else out.push({ path, type: 'file' })
    }
  }
  walk('')
  return out
}

export type Mutation =
  | { readonly op: 'edit'; readonly pick: number; readonly content: ContentSpec }
  | { readonly op: 'same-size-edit'; readonly pick: number; readonly salt: number }
  | { readonly op: 'touch'; readonly pick: number }
  | { readonly op: 'delete-file'; readonly pick: number }
  | { readonly op: 'delete-dir'; readonly pick: number }
  | { readonly op: 'add'; readonly dir: number; readonly name: string; readonly node: NodeSpec }
  | { readonly op: 'rename'; readonly pick: number; readonly dir: number; readonly name: string }
  | { readonly op: 'to-dir'; readonly pick: number; readonly child: { readonly name: string; readonly content: ContentSpec } | null }
  | { readonly op: 'to-file'; readonly pick: number; readonly content: ContentSpec }
  | { readonly op: 'chmod'; readonly pick: number; readonly mode: number }
  | { readonly op: 'retarget'; readonly pick: number; readonly link: LinkSpec }

const pick = fc.nat()
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('edit' as const), pick, content: contentArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('same-size-edit' as const), pick, salt: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('touch' as const), pick }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('delete-file' as const), pick }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete-dir' as const), pick }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('add' as const), dir: pick, name: nameArb, node: nodeArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('rename' as const), pick, dir: pick, name: nameArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('to-dir' as const), pick, child: fc.option(fc.record({ name: nameArb, content: contentArb })) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('to-file' as const), pick, content: contentArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('chmod' as const), pick, mode: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('retarget' as const), pick, link: linkArb }) },
)

function choose<T>(list: readonly T[], n: number): T | undefined {
  return list.length === 0 ? undefined : list[n % list.length]
}
const q = (p: string): string => JSON.stringify(p)

/**
 * Sets a file's mtime to the exact nanosecond (utimes takes a double: not exact at this scale).
 * touch takes its path as an argument, which Node passes as UTF-8 text: a name that is not UTF-8
 * goes through a symlink of a plain name made for the occasion (touch -m follows it).
 */
function setMtimeNs(abs: Buffer, mtimeNs: bigint): void {
  const sec = mtimeNs / 1_000_000_000n
  const nsec = (mtimeNs % 1_000_000_000n).toString().padStart(9, '0')
  const alias = `${tmpdir()}/random-tree-touch-${process.pid}`
  rmSync(alias, { force: true })
  symlinkSync(abs, alias)
  const r = spawnSync('touch', ['-m', '-d', `@${sec}.${nsec}`, '--', alias], { timeout: 10_000 })
  rmSync(alias, { force: true })
  if (r.status !== 0) throw new Error(`touch ${abs}: ${r.stderr?.toString() ?? r.error?.message}`)
}

/**
 * Applies one edit to the tree at root; returns what it did, or null when the tree offers no
 * candidate for it (a no-op). Afterwards the tree holds only what the master publishes.
 */
export function applyMutation(root: string, m: Mutation): string | null {
  const entries = listEntries(root)
  const files = entries.filter((e) => e.type === 'file')
  const dirs = entries.filter((e) => e.type === 'dir')
  const abs = (p: string): Buffer => under(root, p)
  let done: string | null = null
  switch (m.op) {
    case 'edit': {
      const f = choose(files, m.pick)
      if (!f) break
      writeFileSync(abs(f.path), contentBytes(m.content))
      done = `edit ${q(f.path)} to ${contentBytes(m.content).length} bytes`
      break
    }
    case 'same-size-edit': {
      const f = choose(
        files.filter((e) => statSync(abs(e.path)).size > 0),
        m.pick,
      )
      if (!f) break
      const before = statSync(abs(f.path), { bigint: true })
      const bytes = readFileSync(abs(f.path))
      bytes[m.salt % bytes.length] = bytes[m.salt % bytes.length]! ^ m.salt
      writeFileSync(abs(f.path), bytes)
      setMtimeNs(abs(f.path), before.mtimeNs)
      const after = statSync(abs(f.path), { bigint: true })
      if (after.mtimeNs !== before.mtimeNs || after.size !== before.size) throw new Error(`could not set the mtime of ${f.path} back`)
      done = `same-size edit of ${q(f.path)}, mtime set back`
      break
    }
    case 'touch': {
      const f = choose(files, m.pick)
      if (!f) break
      setMtimeNs(abs(f.path), BigInt(Date.now()) * 1_000_000n + 123n)
      done = `touch ${q(f.path)} (bytes unchanged)`
      break
    }
    case 'delete-file': {
      const f = choose(
        entries.filter((e) => e.type !== 'dir'),
        m.pick,
      )
      if (!f) break
      unlinkSync(abs(f.path))
      done = `delete ${f.type} ${q(f.path)}`
      break
    }
    case 'delete-dir': {
      const d = choose(dirs, m.pick)
      if (!d) break
      rmSync(abs(d.path), { recursive: true })
      done = `delete dir ${q(d.path)} and its subtree`
      break
    }
    case 'add': {
      const parent = choose(['', ...dirs.map((d) => d.path)], m.dir)!
      const path = parent ? `${parent}/${m.name}` : m.name
      if (!fits(path) || lstatSync(abs(path), { throwIfNoEntry: false })) break
      makeNode(root, path, m.node)
      done = `add ${m.node.kind} ${q(path)}${m.node.kind === 'link' ? ` -> ${q(readlinkSync(abs(path), { encoding: 'buffer' }).toString('latin1'))}` : ''}`
      break
    }
    case 'rename': {
      const from = choose(entries, m.pick)
      if (!from) break
      const parents = ['', ...dirs.map((d) => d.path)].filter((d) => d !== from.path && !d.startsWith(`${from.path}/`))
      const parent = choose(parents, m.dir)!
      const to = parent ? `${parent}/${m.name}` : m.name
      const existing = lstatSync(abs(to), { throwIfNoEntry: false })
      if (to === from.path || !fits(to) || existing?.isDirectory() || (existing && from.type === 'dir')) break
      renameSync(abs(from.path), abs(to))
      done = `rename ${from.type} ${q(from.path)} to ${q(to)}${existing ? ' (over a file)' : ''}`
      break
    }
    case 'to-dir': {
      const f = choose(
        entries.filter((e) => e.type !== 'dir'),
        m.pick,
      )
      if (!f) break
      unlinkSync(abs(f.path))
      mkdirSync(abs(f.path))
      const child = m.child && fits(`${f.path}/${m.child.name}`) ? m.child : null
      if (child) writeFileSync(abs(`${f.path}/${child.name}`), contentBytes(child.content))
      done = `${f.type} ${q(f.path)} becomes a dir${child ? ` holding ${q(child.name)}` : ' (empty)'}`
      break
    }
    case 'to-file': {
      const d = choose(dirs, m.pick)
      if (!d) break
      rmSync(abs(d.path), { recursive: true })
      writeFileSync(abs(d.path), contentBytes(m.content))
      done = `dir ${q(d.path)} becomes a file`
      break
    }
    case 'chmod': {
      const e = choose(
        entries.filter((x) => x.type !== 'link'),
        m.pick,
      )
      if (!e) break
      const mode = (e.type === 'dir' ? DIR_MODES : FILE_MODES)[m.mode % 3]!
      chmodSync(abs(e.path), mode)
      done = `chmod ${mode.toString(8)} ${q(e.path)}`
      break
    }
    case 'retarget': {
      const l = choose(
        entries.filter((e) => e.type === 'link'),
        m.pick,
      )
      if (!l) break
      unlinkSync(abs(l.path))
      symlinkSync(Buffer.from(linkTarget(l.path, m.link), 'latin1'), abs(l.path))
      done = `retarget ${q(l.path)} -> ${q(linkTarget(l.path, m.link))}`
      break
    }
  }
  if (done) keepPublishable(root)
  return done
}

/**
 * A moved directory can nest too deep: the master would skip it with a warning. Keep the tree
 * free of those, so the model stays "everything". (Links are carried wherever they point.)
 */
function keepPublishable(root: string): void {
  for (const e of listEntries(root)) {
    const abs = under(root, e.path)
    if (!lstatSync(abs, { throwIfNoEntry: false })) continue // under a directory removed just now
    if (!fits(e.path)) rmSync(abs, { recursive: true })
  }
}
