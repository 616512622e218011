import { spawn } from 'node:child_process'
import { createHash, type KeyObject } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createZstdCompressor } from '../../src/archive/zstd-codec.js'
import { MANIFEST_FORMAT } from '../../src/core/manifest.js'
import { openEnvelope, parseRecordPayload, POINTER_FORMAT, sealEnvelope } from '../../src/core/pointer.js'
import type { ArchivePair, ObjectRef, SnapshotRecord } from '../../src/core/snapshot-record.js'
import { BIN, type CliResult } from './cli.js'

/**
 * Hostile inputs for a replica, crafted by hand: raw tar headers, manifests, and objects published
 * in a real store under a valid signature. A compromised master (or a bug in one) passes every
 * hash and signature check, so the replica's own parsing is all that stands between these bytes
 * and the disk.
 */

// ---------------------------------------------------------------- tar, block by block

export const BLOCK = 512
export const END = Buffer.alloc(2 * BLOCK)

export interface RawHeader {
  readonly name: string | Buffer
  /** The typeflag byte: '0' file, '1' hard link, '2' symlink, '3'/'4' devices, '5' dir, '6' fifo, 'x', 'g', 'L'... */
  readonly type?: string
  readonly size?: number
  readonly mode?: number
  readonly linkname?: string | Buffer
  readonly prefix?: string | Buffer
  readonly magic?: 'ustar' | 'gnu' | 'none'
  /** Corrupt the checksum field (by one). */
  readonly badChecksum?: boolean
}

function put(b: Buffer, at: number, width: number, v: string | Buffer): void {
  const bytes = typeof v === 'string' ? Buffer.from(v) : v
  if (bytes.length > width) throw new RangeError(`${JSON.stringify(v.toString())} does not fit ${width} bytes`)
  bytes.copy(b, at)
}
function octal(b: Buffer, at: number, width: number, n: number): void {
  b.write(n.toString(8).padStart(width - 1, '0') + '\0', at, 'latin1')
}

/** One 512-byte header with exactly the fields given: no validation, no pax. */
export function rawHeader(h: RawHeader): Buffer {
  const b = Buffer.alloc(BLOCK)
  put(b, 0, 100, h.name)
  octal(b, 100, 8, h.mode ?? 0o644)
  octal(b, 108, 8, 0)
  octal(b, 116, 8, 0)
  octal(b, 124, 12, h.size ?? 0)
  octal(b, 136, 12, 1_700_000_000)
  b.write(h.type ?? '0', 156, 'latin1')
  if (h.linkname !== undefined) put(b, 157, 100, h.linkname)
  const magic = h.magic ?? 'ustar'
  if (magic === 'ustar') b.write('ustar\u000000', 257, 'latin1')
  else if (magic === 'gnu') b.write('ustar  \u0000', 257, 'latin1')
  if (magic === 'ustar') {
    octal(b, 329, 8, 0)
    octal(b, 337, 8, 0)
  }
  if (h.prefix !== undefined) put(b, 345, 155, h.prefix)
  b.fill(0x20, 148, 156)
  let sum = 0
  for (const byte of b) sum += byte
  if (h.badChecksum) sum += 1
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1')
  return b
}

function padded(data: Buffer): Buffer {
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK
  return pad ? Buffer.concat([data, Buffer.alloc(pad)]) : data
}

/** A pax 'x' header and its body: records "<len> <key>=<value>\n", values as raw bytes if given so. */
export function paxHeader(records: readonly (readonly [string, string | Buffer])[], type = 'x'): Buffer {
  const parts = records.map(([key, value]) => {
    const rest = Buffer.concat([Buffer.from(` ${key}=`), Buffer.from(value), Buffer.from('\n')])
    let len = rest.length + 1
    while (String(len).length + rest.length !== len) len = String(len).length + rest.length
    return Buffer.concat([Buffer.from(String(len)), rest])
  })
  const body = Buffer.concat(parts)
  return Buffer.concat([rawHeader({ name: 'PaxHeader/entry', type, size: body.length }), padded(body)])
}

function needsPax(s: string, width: number): boolean {
  return Buffer.byteLength(s) > width || /[^\x01-\x7f]/.test(s)
}

/** A regular file entry (with a pax header when the name needs one). */
export function tarFile(path: string, data: string | Buffer = '', opts: { mode?: number; type?: string; size?: number } = {}): Buffer {
  const bytes = Buffer.from(data)
  const size = opts.size ?? bytes.length
  const pax = needsPax(path, 100) ? paxHeader([['path', path]]) : Buffer.alloc(0)
  const name = pax.length ? 'long-name-in-pax' : path
  return Buffer.concat([pax, rawHeader({ name, type: opts.type ?? '0', size, mode: opts.mode ?? 0o644 }), padded(bytes)])
}
export function tarDir(path: string, mode = 0o755): Buffer {
  const pax = needsPax(path + '/', 100) ? paxHeader([['path', path + '/']]) : Buffer.alloc(0)
  return Buffer.concat([pax, rawHeader({ name: pax.length ? 'long-dir-in-pax/' : path + '/', type: '5', mode })])
}
export function tarLink(path: string, target: string, type = '2'): Buffer {
  const records: [string, string][] = []
  if (needsPax(path, 100)) records.push(['path', path])
  if (needsPax(target, 100)) records.push(['linkpath', target])
  const pax = records.length ? paxHeader(records) : Buffer.alloc(0)
  return Buffer.concat([
    pax,
    rawHeader({ name: needsPax(path, 100) ? 'long-link-in-pax' : path, type, mode: 0o777, linkname: needsPax(target, 100) ? 'long-target' : target }),
  ])
}

/** Entries followed by the two end-of-archive blocks. */
export function tarOf(...pieces: Buffer[]): Buffer {
  return Buffer.concat([...pieces, END])
}

// ---------------------------------------------------------------- manifests

export interface ManifestHeaderSpec {
  id: number
  kind: 'full' | 'delta'
  base: number | null
  entries?: number
  deleted?: number
  manifest?: string
}
export type LineSpec = Record<string, unknown> | string | Buffer

export const sha256 = (b: string | Buffer): string => createHash('sha256').update(b).digest('hex')
/** The mtime every hand-made manifest line carries (format 3). */
export const MT = '1700000000.000000000'
export const fLine = (p: string, data: string | Buffer = '', m = 0o644): Record<string, unknown> => ({ t: 'f', p, m, s: Buffer.byteLength(data), u: MT })
export const dLine = (p: string, m = 0o755): Record<string, unknown> => ({ t: 'd', p, m, u: MT })
export const lLine = (p: string, l: string): Record<string, unknown> => ({ t: 'l', p, l, u: MT })
export const delLine = (p: string): Record<string, unknown> => ({ t: '-', p })

/** A manifest; the header's counts default to the lines given (objects only; raw lines count as entries). */
export function manifestOf(h: ManifestHeaderSpec, lines: readonly LineSpec[]): Buffer {
  const isDeletion = (l: LineSpec): boolean => typeof l === 'object' && !Buffer.isBuffer(l) && l.t === '-'
  const deleted = h.deleted ?? lines.filter(isDeletion).length
  const entries = h.entries ?? lines.length - lines.filter(isDeletion).length
  const header = { manifest: h.manifest ?? MANIFEST_FORMAT, id: h.id, kind: h.kind, base: h.base, entries, deleted, root: { m: 0o755, u: MT } }
  const body = lines.map((l) => (Buffer.isBuffer(l) ? Buffer.concat([l, Buffer.from('\n')]) : Buffer.from((typeof l === 'string' ? l : JSON.stringify(l)) + '\n')))
  return Buffer.concat([Buffer.from(JSON.stringify(header) + '\n'), ...body])
}

// ---------------------------------------------------------------- the hostile inputs

/** Exit codes (README "Exit codes"): 6 refused, 3 verification failed. */
export const REFUSED = 6
export const VERIFY = 3

/** Where escapes would land: absolute paths outside every tree. */
export interface Places {
  /** An existing directory outside the tree, holding victim.txt. */
  readonly outside: string
  /** An absolute path in the system temp dir that must never come to exist ("/tmp/outside"). */
  readonly tmpTarget: string
}
/** One hostile snapshot 2, a delta on the base tree (dir/a.m3u, dir/sub/b.m3u, links/to-dir -> ../dir, top.m3u, zz.m3u). */
export interface HostileArchive {
  readonly name: string
  readonly code: typeof REFUSED | typeof VERIFY
  readonly message: RegExp
  /** Also run end to end through the CLI; every case runs against applyArchive. */
  readonly cli?: boolean
  readonly make: (p: Places) => { tar: Buffer; manifest: Buffer; tarBytes?: number }
}

export const deltaManifest = (lines: readonly LineSpec[], over: Partial<ManifestHeaderSpec> = {}): Buffer =>
  manifestOf({ id: 2, kind: 'delta', base: 1, ...over }, lines)
const d = (tar: Buffer, lines: readonly LineSpec[] | Buffer, tarBytes?: number): { tar: Buffer; manifest: Buffer; tarBytes?: number } => ({
  tar,
  manifest: Buffer.isBuffer(lines) ? lines : deltaManifest(lines),
  ...(tarBytes === undefined ? {} : { tarBytes }),
})

/** A plain, valid one-file delta, to which single faults are added. */
export const OK = { tar: tarOf(tarFile('new.m3u', 'new\n')), lines: [fLine('new.m3u', 'new\n')] }
const DEEP = Array.from({ length: 257 }, (_, i) => `d${i % 10}`).join('/')
const LONG_PATH = Array.from({ length: 16 }, () => 'p'.repeat(250)).join('/')
const dataBlock = (s: string): Buffer => Buffer.concat([Buffer.from(s), Buffer.alloc(BLOCK - s.length)])

export const HOSTILE_ARCHIVES: readonly HostileArchive[] = [
  // ---- absolute paths and '..', in the manifest and in the tar
  { cli: true, name: "an absolute path '/etc/x' (manifest and tar)", code: REFUSED, message: /"\/etc\/x": absolute path/, make: () => d(tarOf(tarFile('/etc/x', 'x')), [fLine('/etc/x', 'x')]) },
  { cli: true, name: "'../x' (manifest and tar)", code: REFUSED, message: /"\.\.\/x": '\.\.' segment/, make: () => d(tarOf(tarFile('../x', 'x')), [fLine('../x', 'x')]) },
  { cli: true, name: "'a/../../x' (manifest and tar)", code: REFUSED, message: /"a\/\.\.\/\.\.\/x": '\.\.' segment/, make: () => d(tarOf(tarFile('a/../../x', 'x')), [fLine('a/../../x', 'x')]) },
  { name: "'./../x' (manifest and tar)", code: REFUSED, message: /"\.\/\.\.\/x": '\.' segment/, make: () => d(tarOf(tarFile('./../x', 'x')), [fLine('./../x', 'x')]) },
  { cli: true, name: "a directory 'dir/sub/..' (a trailing '/..')", code: REFUSED, message: /"dir\/sub\/\.\.": '\.\.' segment/, make: () => d(tarOf(tarDir('dir/sub/..')), [dLine('dir/sub/..')]) },
  { cli: true, name: "tar only: an absolute ustar name '/tmp/...' (the manifest says 'x')", code: REFUSED, message: /archive entry "\/.*" is unsafe \(absolute path\)/, make: (p) => d(tarOf(tarFile(p.tmpTarget, 'x')), [fLine('x', 'x')]) },
  { cli: true, name: "tar only: '../x' spelt with the ustar prefix field", code: REFUSED, message: /archive entry "\.\.\/x" is unsafe \('\.\.' segment\)/, make: () => d(tarOf(rawHeader({ name: 'x', prefix: '..', size: 2 }), dataBlock('x\n')), [fLine('x', 'x\n')]) },
  { name: "tar only: 'dir/../../x' in a pax path", code: REFUSED, message: /archive entry "dir\/\.\.\/\.\.\/x" is unsafe \('\.\.' segment\)/, make: () => d(tarOf(paxHeader([['path', 'dir/../../x']]), rawHeader({ name: 'x' })), [fLine('x')]) },
  { cli: true, name: "a deletion of '../../x'", code: REFUSED, message: /"\.\.\/\.\.\/x": '\.\.' segment/, make: () => d(OK.tar, [delLine('../../x'), ...OK.lines]) },
  { name: 'a deletion of an absolute path', code: REFUSED, message: /absolute path/, make: (p) => d(OK.tar, [delLine(p.outside), ...OK.lines]) },

  // ---- symlinks that escape, and writes through symlinks
  { cli: true, name: "a symlink to an absolute path ('/tmp/outside'), then a file through it", code: REFUSED, message: /"l" is not a real directory: refusing to write through it/, make: (p) => d(tarOf(tarLink('l', p.tmpTarget), tarFile('l/file', 'x')), [lLine('l', p.tmpTarget), fLine('l/file', 'x')]) },
  { cli: true, name: "a symlink to the replica's neighbour '../../../sentinel-dir', then a file through it", code: REFUSED, message: /"l" is not a real directory: refusing to write through it/, make: () => d(tarOf(tarLink('l', '../../../sentinel-dir'), tarFile('l/file', 'x')), [lLine('l', '../../../sentinel-dir'), fLine('l/file', 'x')]) },
  { cli: true, name: 'tar only: a symlink to an absolute path (the manifest names a safe target)', code: REFUSED, message: /"l": the archive's link target differs from the manifest's/, make: (p) => d(tarOf(tarLink('l', p.outside)), [lLine('l', 'dir')]) },
  { cli: true, name: "a symlink 'l -> .' (a loop), then 'l/file' through it", code: REFUSED, message: /"l" is not a real directory: refusing to write through it/, make: () => d(tarOf(tarLink('l', '.'), tarFile('l/file', 'x')), [lLine('l', '.'), fLine('l/file', 'x')]) },
  { name: "a safe symlink 'l -> dir', then 'l/evil' through it", code: REFUSED, message: /"l" is not a real directory: refusing to write through it/, make: () => d(tarOf(tarLink('l', 'dir'), tarFile('l/evil', 'x')), [lLine('l', 'dir'), fLine('l/evil', 'x')]) },
  { cli: true, name: "a symlink replacing the directory 'dir', then an entry below it", code: REFUSED, message: /"dir" is not a real directory: refusing to write through it/, make: () => d(tarOf(tarLink('dir', 'links'), tarFile('dir/evil', 'x')), [lLine('dir', 'links'), fLine('dir/evil', 'x')]) },
  { cli: true, name: "a file through the base tree's own symlink 'links/to-dir'", code: REFUSED, message: /"links\/to-dir" is not a real directory: refusing to write through it/, make: () => d(tarOf(tarFile('links/to-dir/evil', 'x')), [fLine('links/to-dir/evil', 'x')]) },

  // ---- hard links, devices, fifos, and tar extensions we never write
  { name: 'a hard link to a file inside the tree', code: REFUSED, message: /archive entry "h" is of a refused type \(hard link\)/, make: () => d(tarOf(tarLink('h', 'dir/a.m3u', '1')), [fLine('h', 'a\n')]) },
  { cli: true, name: 'a hard link to /etc/passwd', code: REFUSED, message: /archive entry "h" is of a refused type \(hard link\)/, make: () => d(tarOf(tarLink('h', '/etc/passwd', '1')), [fLine('h')]) },
  { cli: true, name: 'a character device (type 3)', code: REFUSED, message: /refused type \(character device\)/, make: () => d(tarOf(rawHeader({ name: 'null', type: '3' })), [fLine('null')]) },
  { name: 'a block device (type 4)', code: REFUSED, message: /refused type \(block device\)/, make: () => d(tarOf(rawHeader({ name: 'sda', type: '4' })), [fLine('sda')]) },
  { cli: true, name: 'a fifo (type 6)', code: REFUSED, message: /refused type \(fifo\)/, make: () => d(tarOf(rawHeader({ name: 'pipe', type: '6' })), [fLine('pipe')]) },
  { cli: true, name: "a pax global header ('g')", code: REFUSED, message: /refused type \(pax global header\)/, make: () => d(Buffer.concat([paxHeader([['path', 'new.m3u']], 'g'), OK.tar]), OK.lines) },
  {
    cli: true,
    name: "a GNU long name ('L')",
    code: REFUSED,
    message: /refused type \(GNU long name/,
    make: () => d(tarOf(rawHeader({ name: '././@LongLink', type: 'L', size: 151, magic: 'gnu' }), dataBlock('y'.repeat(150) + '\0'), rawHeader({ name: 'y'.repeat(100), magic: 'gnu' })), [fLine('y'.repeat(150))]),
  },
  { name: 'a GNU-format header', code: REFUSED, message: /has a GNU-format header/, make: () => d(tarOf(rawHeader({ name: 'new.m3u', magic: 'gnu' })), [fLine('new.m3u')]) },
  { name: 'a pax header describing a sparse file', code: REFUSED, message: /describes a sparse file/, make: () => d(Buffer.concat([paxHeader([['GNU.sparse.map', '0,0']]), OK.tar]), OK.lines) },

  // ---- duplicates and collisions
  { cli: true, name: 'the same path twice in the tar', code: REFUSED, message: /archive entry "new\.m3u" is not named by the manifest/, make: () => d(tarOf(tarFile('new.m3u', 'new\n'), tarFile('new.m3u', 'new\n')), OK.lines) },
  { name: 'the same path twice in the manifest (and the tar)', code: REFUSED, message: /entry "new\.m3u" is repeated or out of order/, make: () => d(tarOf(tarFile('new.m3u', 'new\n'), tarFile('new.m3u', 'new\n')), [...OK.lines, ...OK.lines]) },
  { name: 'the same deletion twice', code: REFUSED, message: /deletion "top\.m3u" is repeated or out of order/, make: () => d(OK.tar, [delLine('top.m3u'), delLine('top.m3u'), ...OK.lines]) },
  { name: 'a directory and a file of the same name', code: REFUSED, message: /entry "x" is repeated or out of order/, make: () => d(tarOf(tarDir('x'), tarFile('x', 'x')), [dLine('x'), fLine('x', 'x')]) },
  { name: "a pax path that collides with the next entry's name", code: REFUSED, message: /archive entry "new\.m3u" is not named by the manifest/, make: () => d(tarOf(paxHeader([['path', 'new.m3u']]), rawHeader({ name: 'other.m3u' }), tarFile('new.m3u')), [fLine('new.m3u')]) },

  // ---- archive and manifest disagree
  { cli: true, name: 'an archive entry the manifest does not name (in the middle)', code: REFUSED, message: /archive entry "m\.m3u" is not the one the manifest names next \("z\.m3u"\)/, make: () => d(tarOf(tarFile('a.m3u'), tarFile('m.m3u'), tarFile('z.m3u')), [fLine('a.m3u'), fLine('z.m3u')]) },
  { name: 'an archive entry the manifest does not name (after the last)', code: REFUSED, message: /archive entry "zzz\.m3u" is not named by the manifest/, make: () => d(tarOf(tarFile('new.m3u', 'new\n'), tarFile('zzz.m3u')), OK.lines) },
  { cli: true, name: 'a manifest entry missing from the archive', code: REFUSED, message: /manifest entry "zzz\.m3u" is missing from the archive/, make: () => d(OK.tar, [...OK.lines, fLine('zzz.m3u')]) },
  { cli: true, name: 'manifest entries out of order', code: REFUSED, message: /entry "a\.m3u" is repeated or out of order/, make: () => d(tarOf(tarFile('b.m3u'), tarFile('a.m3u')), [fLine('b.m3u'), fLine('a.m3u')]) },
  { name: 'manifest deletions in ascending order', code: REFUSED, message: /deletion "zz\.m3u" is repeated or out of order/, make: () => d(OK.tar, [delLine('top.m3u'), delLine('zz.m3u'), ...OK.lines]) },
  { name: 'a deletion after the entries', code: REFUSED, message: /a deletion after the entries/, make: () => d(OK.tar, [...OK.lines, delLine('top.m3u')]) },
  { name: 'archive order that differs from the manifest', code: REFUSED, message: /archive entry "b\.m3u" is not the one the manifest names next \("a\.m3u"\)/, make: () => d(tarOf(tarFile('b.m3u'), tarFile('a.m3u')), [fLine('a.m3u'), fLine('b.m3u')]) },
  { cli: true, name: 'a size in the tar that differs from the manifest', code: REFUSED, message: /"new\.m3u": 4 bytes in the archive, 5 in the manifest/, make: () => d(OK.tar, [fLine('new.m3u', 'new!\n')]) },
  { cli: true, name: 'a mode in the tar that differs from the manifest', code: REFUSED, message: /"new\.m3u": mode 4755 in the archive, 755 in the manifest/, make: () => d(tarOf(tarFile('new.m3u', 'new\n', { mode: 0o4755 })), [fLine('new.m3u', 'new\n', 0o755)]) },
  { name: "a directory's mode in the tar that differs from the manifest", code: REFUSED, message: /"new": mode 777 in the archive, 700 in the manifest/, make: () => d(tarOf(tarDir('new', 0o777)), [dLine('new', 0o700)]) },
  { name: 'a type in the tar that differs from the manifest', code: REFUSED, message: /"new\.m3u": the archive and the manifest disagree on its type/, make: () => d(tarOf(tarDir('new.m3u')), OK.lines) },
  { name: "a pax size that differs from the header's", code: REFUSED, message: /"new\.m3u": its pax size differs/, make: () => d(Buffer.concat([paxHeader([['size', '9']]), OK.tar]), OK.lines) },

  // ---- the stream itself
  { cli: true, name: 'a file whose data runs past the declared tarBytes', code: REFUSED, message: /unpacks to more than the 1536 bytes it declares/, make: () => d(tarOf(tarFile('new.m3u', Buffer.alloc(4096, 1))), [fLine('new.m3u', Buffer.alloc(4096, 1))], 1536) },
  { cli: true, name: 'a truncated tar stream (tarBytes says where it stops)', code: REFUSED, message: /the archive is truncated/, make: () => d(tarOf(tarFile('new.m3u', Buffer.alloc(2048, 1))).subarray(0, 1536), [fLine('new.m3u', Buffer.alloc(2048, 1))]) },
  { name: 'a tar stream shorter than its declared tarBytes', code: REFUSED, message: /the archive unpacks to 2048 bytes, it declares 2560/, make: () => d(OK.tar, OK.lines, OK.tar.length + 512) },
  { cli: true, name: 'data after the end-of-archive blocks', code: REFUSED, message: /data after the end of the archive/, make: () => d(Buffer.concat([OK.tar, tarFile('late.m3u', 'late')]), OK.lines) },
  { name: 'a directory entry with data', code: REFUSED, message: /"d": a directory with data/, make: () => d(tarOf(rawHeader({ name: 'd/', type: '5', size: 512 }), Buffer.alloc(512, 65)), [dLine('d')]) },
  { name: 'a symlink entry with data', code: REFUSED, message: /"l": a symlink with data/, make: () => d(tarOf(rawHeader({ name: 'l', type: '2', linkname: 'dir', size: 512 }), Buffer.alloc(512, 65)), [lLine('l', 'dir')]) },
  { cli: true, name: 'a bad header checksum', code: REFUSED, message: /an archive header has a bad checksum/, make: () => d(tarOf(rawHeader({ name: 'new.m3u', badChecksum: true })), [fLine('new.m3u')]) },
  { name: 'a lone zero block inside the archive', code: REFUSED, message: /a lone zero block inside the archive/, make: () => d(tarOf(tarFile('a.m3u'), Buffer.alloc(512), tarFile('b.m3u')), [fLine('a.m3u'), fLine('b.m3u')]) },

  // ---- names
  { cli: true, name: 'nesting deeper than MAX_DEPTH (257 levels)', code: REFUSED, message: /nested deeper than 256 levels/, make: () => d(tarOf(tarFile(DEEP)), [fLine(DEEP)]) },
  { name: 'a NUL byte in a manifest path', code: REFUSED, message: /NUL byte in path/, make: () => d(OK.tar, [fLine('new.m3u\0.evil', 'new\n')]) },
  { name: 'a NUL byte in a pax path', code: REFUSED, message: /a pax header's path holds a NUL byte/, make: () => d(tarOf(paxHeader([['path', 'new.m3u\0/../../x']]), rawHeader({ name: 'new.m3u' })), [fLine('new.m3u')]) },
  { name: "an empty segment 'dir//x'", code: REFUSED, message: /'\/\/' segment/, make: () => d(tarOf(tarFile('dir//x')), [fLine('dir//x')]) },
  { name: "a path that is '.'", code: REFUSED, message: /"\.": '\.' segment/, make: () => d(tarOf(tarDir('.')), [dLine('.')]) },
  { name: "a path that is '..'", code: REFUSED, message: /"\.\.": '\.\.' segment/, make: () => d(tarOf(tarDir('..')), [dLine('..')]) },
  { name: 'an empty path', code: REFUSED, message: /empty path/, make: () => d(OK.tar, [fLine('', 'new\n')]) },
  { name: 'a name longer than 255 bytes', code: REFUSED, message: /a name longer than 255 bytes/, make: () => d(tarOf(tarFile('n'.repeat(256))), [fLine('n'.repeat(256))]) },
  { name: 'a path longer than 3800 bytes', code: REFUSED, message: /path longer than 3800 bytes/, make: () => d(tarOf(tarFile(LONG_PATH)), [fLine(LONG_PATH)]) },
  {
    cli: true,
    name: 'invalid UTF-8 in a pax path (the manifest names a valid one)',
    code: REFUSED,
    message: /archive entry "bad\\xff\\xfe" is not the one the manifest names next \("bad"\)/,
    make: () => d(tarOf(paxHeader([['path', Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe])]]), rawHeader({ name: 'bad' })), [fLine('bad')]),
  },
  {
    name: 'invalid UTF-8 in a manifest path',
    code: REFUSED,
    message: /the manifest is not valid UTF-8 text/,
    make: () => d(tarOf(tarFile('bad')), [Buffer.concat([Buffer.from('{"t":"f","p":"bad'), Buffer.from([0xc3, 0x28]), Buffer.from('","m":420,"s":0,"u":"1700000000.000000000"}')])]),
  },

  // ---- a manifest body that disagrees with its own header (which the signed record repeats)
  { name: 'more entries than the manifest header declares', code: REFUSED, message: /the manifest holds more than the 1 entries its header declares/, make: () => d(tarOf(tarFile('a.m3u'), tarFile('b.m3u')), deltaManifest([fLine('a.m3u'), fLine('b.m3u')], { entries: 1 })) },
  { name: 'more deletions than the manifest header declares', code: REFUSED, message: /the manifest holds more than the 0 deletions its header declares/, make: () => d(OK.tar, deltaManifest([delLine('zz.m3u'), ...OK.lines], { deleted: 0 })) },
  { name: 'fewer entries than the manifest header declares', code: REFUSED, message: /the manifest holds 1 entries and 0 deletions, its header declares 2 and 0/, make: () => d(OK.tar, deltaManifest(OK.lines, { entries: 2 })) },
  { name: 'an unknown manifest format', code: REFUSED, message: /unknown manifest format/, make: () => d(OK.tar, deltaManifest(OK.lines, { manifest: 'playlist-snapshot-manifest/0' })) },
]

// ---------------------------------------------------------------- zstd

/** Compresses a stream of chunks (pulled lazily, so a bomb's source never sits in memory). */
export async function zstd(input: Buffer | Iterable<Buffer>): Promise<Buffer> {
  const c = await createZstdCompressor(3)
  const out: Buffer[] = []
  const done = (async () => {
    for await (const chunk of c as AsyncIterable<Buffer>) out.push(chunk)
  })()
  for (const chunk of Buffer.isBuffer(input) ? [input] : input) {
    if (!c.write(chunk)) await new Promise<void>((r) => c.once('drain', () => r()))
  }
  c.end()
  await done
  return Buffer.concat(out)
}

// ---------------------------------------------------------------- the store

export class HostileStore {
  constructor(
    readonly dir: string,
    private readonly key: KeyObject,
  ) {}

  /** A record the real `snapshot build` published. */
  record(id: number): SnapshotRecord {
    return parseRecordPayload(openEnvelope(readFileSync(join(this.dir, 'snapshots', `${id}.json`)), []), id)
  }

  /** Stores already-compressed bytes under their content name: they pass every hash check. */
  putObject(zst: Buffer, ext: 'tar.zst' | 'manifest.zst'): ObjectRef {
    const sha = sha256(zst)
    const path = `objects/${sha}.${ext}`
    mkdirSync(join(this.dir, 'objects'), { recursive: true })
    writeFileSync(join(this.dir, path), zst)
    return { path, sha256: sha, length: zst.length }
  }

  /**
   * An archive pair from an uncompressed tar and manifest (or from ready .zst bytes). tarBytes,
   * entries and deleted default to the truth (the manifest header's counts).
   */
  async pair(
    tar: Buffer | { zst: Buffer; tarBytes: number },
    manifest: Buffer | { zst: Buffer },
    over: { tarBytes?: number; entries?: number; deleted?: number } = {},
  ): Promise<ArchivePair> {
    const archiveZst = Buffer.isBuffer(tar) ? await zstd(tar) : tar.zst
    const manifestZst = Buffer.isBuffer(manifest) ? await zstd(manifest) : manifest.zst
    let counts = { entries: 0, deleted: 0 }
    if (Buffer.isBuffer(manifest)) {
      const head = JSON.parse(manifest.subarray(0, manifest.indexOf(10)).toString()) as { entries: number; deleted: number }
      counts = { entries: head.entries, deleted: head.deleted }
    }
    return {
      archive: { ...this.putObject(archiveZst, 'tar.zst'), tarBytes: over.tarBytes ?? (Buffer.isBuffer(tar) ? tar.length : tar.tarBytes) },
      manifest: this.putObject(manifestZst, 'manifest.zst'),
      entries: over.entries ?? counts.entries,
      deleted: over.deleted ?? counts.deleted,
    }
  }

  /** Snapshot `id` as a delta on `parent` (or, with kind 'full', a whole-tree snapshot). */
  snapshot(id: number, parent: SnapshotRecord, pair: ArchivePair, kind: 'delta' | 'full' = 'delta', extra: Partial<SnapshotRecord> = {}): SnapshotRecord {
    return {
      id,
      parent: parent.id,
      created: new Date().toISOString(),
      kind,
      treeDigest: parent.treeDigest,
      files: parent.files,
      dirs: parent.dirs,
      links: parent.links,
      bytes: parent.bytes,
      ...(kind === 'delta' ? { delta: pair } : { full: pair }),
      ...extra,
    }
  }

  /** Signs and publishes `latest` (its record, then the pointer), with `before` as the rest of the chain. */
  publish(latest: SnapshotRecord, before: readonly SnapshotRecord[]): void {
    writeFileSync(join(this.dir, 'snapshots', `${latest.id}.json`), sealEnvelope({ format: POINTER_FORMAT, snapshot: latest }, this.key))
    writeFileSync(join(this.dir, 'latest.json'), sealEnvelope({ format: POINTER_FORMAT, latest, chain: [...before, latest] }, this.key))
  }
}

// ---------------------------------------------------------------- "nothing else was touched"

/**
 * Everything under `root` that could betray a write: type, mode, size, mtime, and bytes or link
 * target, by path. Paths under `exclude` (absolute) are skipped.
 */
export function fingerprint(root: string, exclude: readonly string[] = []): Map<string, string> {
  const out = new Map<string, string>()
  const walk = (abs: string, rel: string): void => {
    if (exclude.some((x) => abs === x || abs.startsWith(x + '/'))) return
    const st = lstatSync(abs)
    const head = `${(st.mode & 0o170000).toString(8)} ${(st.mode & 0o7777).toString(8)} ${st.mtimeMs} ${st.ino}`
    if (st.isSymbolicLink()) out.set(rel, `${head} -> ${readlinkSync(abs)}`)
    else if (st.isFile()) out.set(rel, `${head} ${st.size} ${sha256(readFileSync(abs))}`)
    else if (st.isDirectory()) {
      out.set(rel, head)
      for (const name of readdirSync(abs).sort()) walk(join(abs, name), rel ? `${rel}/${name}` : name)
    } else out.set(rel, `${head} special`)
  }
  walk(root, '')
  return out
}

export function fingerprintDiff(before: Map<string, string>, after: Map<string, string>): string[] {
  const lines: string[] = []
  for (const [p, v] of before) if (after.get(p) !== v) lines.push(`${JSON.stringify(p)}: was ${v}, now ${after.get(p) ?? 'gone'}`)
  for (const [p, v] of after) if (!before.has(p)) lines.push(`${JSON.stringify(p)}: appeared (${v})`)
  return lines
}

// ---------------------------------------------------------------- peak memory of a CLI run

/**
 * Runs the CLI like runCli, and measures the child's peak RSS (KiB): by GNU time when installed,
 * else by polling VmHWM in /proc (which can miss a spike in the last few milliseconds).
 */
export function runCliMeasured(args: string[], scratch: string, timeoutMs = 60_000): Promise<CliResult & { peakRssKiB: number }> {
  const useTime = existsSync('/usr/bin/time')
  const rssFile = join(scratch, `rss-${process.pid}-${Date.now()}.txt`)
  const [cmd, argv] = useTime ? ['/usr/bin/time', ['-f', '%M', '-o', rssFile, process.execPath, BIN, ...args]] : [process.execPath, [BIN, ...args]]
  return new Promise((resolve, reject) => {
    const child = spawn(cmd as string, argv as string[], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let polled = 0
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const poll = useTime
      ? undefined
      : setInterval(() => {
          try {
            const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
            if (m) polled = Math.max(polled, Number(m[1]))
          } catch {
            // the child is gone
          }
        }, 5)
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`snapshot ${args.join(' ')} timed out\n${stderr}`))
    }, timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      if (poll) clearInterval(poll)
      let peakRssKiB = polled
      if (useTime) {
        peakRssKiB = Number(readFileSync(rssFile, 'utf8').trim().split('\n').at(-1))
        rmSync(rssFile, { force: true })
      }
      resolve({ code: code ?? -1, stdout, stderr, peakRssKiB })
    })
  })
}
