import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { Header, Pax } from 'tar'
import { TarPacker } from '../src/archive/tar-pack.js'
import { TarReader, type TarEntryHeader } from '../src/archive/tar-reader.js'
import { decodePaxRecords, decodeUstarHeader, encodeUstarHeader } from '../src/archive/ustar-header.js'
import { UnsafeArchiveError } from '../src/core/errors.js'
import { byteStringOf } from '../src/core/byte-path.js'

type Spec = { type: 'f'; path: string; mode: number; data: Buffer } | { type: 'd'; path: string; mode: number } | { type: 'l'; path: string; target: string }
interface ReadEntry extends TarEntryHeader {
  data: Buffer
}

const MTIME = new Date(1_700_000_000_000)
const MTIME_SEC = 1_700_000_000
const hasTar = spawnSync('tar', ['--version']).status === 0
const noTar = hasTar ? false : 'GNU tar is not on PATH'

async function pack(specs: readonly Spec[]): Promise<Buffer> {
  const chunks: Buffer[] = []
  const packer = new TarPacker(async (c) => void chunks.push(Buffer.from(c)))
  // Names are byte strings (src/core/byte-path.ts): the specs' text, as UTF-8 bytes.
  for (const s of specs) {
    if (s.type === 'f') await packer.addFile(byteStringOf(s.path), s.mode, MTIME_SEC, s.data)
    else if (s.type === 'd') await packer.addDir(byteStringOf(s.path), s.mode, MTIME_SEC)
    else await packer.addLink(byteStringOf(s.path), byteStringOf(s.target), MTIME_SEC)
  }
  const total = await packer.finish()
  const tar = Buffer.concat(chunks)
  assert.equal(total, tar.length)
  assert.equal(tar.length % 512, 0)
  return tar
}

/** Reads a whole archive, handed over in pieces of `piece` bytes. */
function readAll(tar: Buffer, piece = tar.length): ReadEntry[] {
  const out: ReadEntry[] = []
  let parts: Buffer[] = []
  const reader = new TarReader({
    entry(h) {
      parts = []
      out.push({ ...h, data: Buffer.alloc(0) })
    },
    data(c) {
      parts.push(Buffer.from(c))
    },
    end() {
      out[out.length - 1]!.data = Buffer.concat(parts)
    },
  })
  for (let o = 0; o < tar.length; o += piece) reader.write(tar.subarray(o, o + piece))
  reader.close()
  return out
}

function expected(specs: readonly Spec[]): ReadEntry[] {
  return specs.map((s): ReadEntry =>
    s.type === 'f'
      ? { type: 'f', path: byteStringOf(s.path), mode: s.mode, size: s.data.length, linkpath: '', data: s.data }
      : s.type === 'd'
        ? { type: 'd', path: byteStringOf(s.path), mode: s.mode, size: 0, linkpath: '', data: Buffer.alloc(0) }
        : { type: 'l', path: byteStringOf(s.path), mode: 0o777, size: 0, linkpath: byteStringOf(s.target), data: Buffer.alloc(0) },
  )
}

const file = (path: string, data: string | Buffer, mode = 0o644): Spec => ({ type: 'f', path, mode, data: Buffer.from(data) })
const dir = (path: string, mode = 0o755): Spec => ({ type: 'd', path, mode })
const link = (path: string, target: string): Spec => ({ type: 'l', path, target })

const A = 'p'.repeat(60)
const B = `${A}/${'q'.repeat(93)}` // 154 bytes: the longest prefix below is B
const C = 'c'.repeat(155)
const deep = Array.from({ length: 30 }, (_, i) => `level-${String(i).padStart(2, '0')}`)

/** Every awkward case, parents before children so GNU tar can extract it too. */
const SPECS: readonly Spec[] = [
  dir('top'),
  file('top/empty', ''),
  file('top/block', Buffer.alloc(512, 7), 0o600),
  file('top/block+1', Buffer.alloc(513, 8), 0o640),
  file('top/exec.sh', '#!/bin/sh\necho hi\n', 0o755),
  file('top/big.bin', Buffer.alloc((600 << 10) + 3, 9)), // large enough to skip the chunk buffer
  link('top/link', 'block'),
  link('top/link-100', 'b'.repeat(100)),
  link('top/link-long', `../${'x'.repeat(150)}/target`),
  link('top/link-unicode', 'caf\u00e9/ü'),
  dir('top/private', 0o700),
  file('n'.repeat(99), '99'),
  file('n'.repeat(100), '100'),
  file('n'.repeat(101), '101'),
  file('n'.repeat(155), '155'),
  file('n'.repeat(255), '255'),
  dir(A),
  dir(B), // 155 bytes with its '/'
  file(`${B}/${'r'.repeat(100)}`, 'prefix 154 + name 100: 255 bytes, plain ustar'),
  file(`${B}/${'r'.repeat(101)}`, 'a 101-byte name: pax'),
  file(`${B}/${'z'.repeat(254)}`, 'a 254-byte name under a long prefix: pax'),
  dir(C),
  file(`${C}/${'f'.repeat(100)}`, 'prefix 155 + name 100: 256 bytes, the most ustar holds'),
  file(`${C}/g`, 'prefix 155 + short name'),
  dir('odd'),
  file('odd/caf\u00e9.m3u', 'nfc'),
  file('odd/cafe\u0301.m3u', 'nfd'),
  file('odd/new\nline.m3u', 'an ASCII newline fits ustar'),
  file('odd/ü\nnewline.m3u', 'a newline in a pax path'),
  file(`odd/${'ü'.repeat(60)}\n${'x'.repeat(10)}`, 'node-tar\'s Pax.parse drops this path for the truncated ustar name'),
  file('odd/say "hi" it\'s.m3u', 'quotes'),
  file('odd/日本語.m3u', 'unicode'),
  ...deep.map((_, i) => dir(`odd/${deep.slice(0, i + 1).join('/')}`)),
  file(`odd/${deep.join('/')}/bottom.m3u`, 'a path over 255 bytes'),
  dir('many'),
  ...Array.from({ length: 5000 }, (_, i) => file(`many/f${i}.m3u`, `#EXTM3U\n${'x'.repeat(i % 300)}\n`)), // crosses chunks
]

test('TarPacker -> TarReader round-trips every awkward entry, however the stream is cut', async () => {
  const tar = await pack(SPECS)
  const want = expected(SPECS)
  for (const piece of [tar.length, 65536, 4099, 513, 512, 511]) assert.deepEqual(readAll(tar, piece), want, `pieces of ${piece} bytes`)
  const small = SPECS.filter((s) => !s.path.startsWith('many/') && !s.path.endsWith('.bin'))
  assert.deepEqual(readAll(await pack(small), 1), expected(small), 'one byte at a time')
})

test('pax headers appear exactly for the entries that need them', async () => {
  const paxFor = async (s: Spec): Promise<boolean> => (await pack([s]))[156] === 0x78 // 'x'
  // Names are bytes: a UTF-8 name that fits goes into the ustar field as its bytes, as GNU tar writes it.
  for (const s of [file('n'.repeat(100), ''), file(`${B}/${'r'.repeat(100)}`, ''), file(`${C}/${'f'.repeat(100)}`, ''), dir(B), link('l', 'b'.repeat(100)), file('odd/new\nline', ''), file('caf\u00e9', ''), link('l', 'ü')]) {
    assert.equal(await paxFor(s), false, JSON.stringify(s.path))
  }
  for (const s of [file('n'.repeat(101), ''), file(`${B}/${'r'.repeat(101)}`, ''), dir(C), file(`${'e'.repeat(156)}/x`, ''), link('l', 'b'.repeat(101)), file('ü'.repeat(51), '')]) {
    assert.equal(await paxFor(s), true, JSON.stringify(s.path))
  }
})

test('encodeUstarHeader writes a standard header that node-tar decodes alike', () => {
  const buf = Buffer.alloc(1024, 0xaa)
  const path = `${B}/${'r'.repeat(100)}`
  assert.equal(encodeUstarHeader(buf, 512, { path, mode: 0o640, size: 8 * 2 ** 30 - 1, mtimeSec: MTIME_SEC, type: '0' }), true)
  assert.ok(buf.subarray(0, 512).every((b) => b === 0xaa), 'nothing written before the offset')
  const h = new Header(buf, 512)
  assert.equal(h.cksumValid, true)
  assert.deepEqual([h.path, h.mode, h.size, h.mtime?.getTime(), h.type, h.uid, h.gid, h.uname, h.gname], [path, 0o640, 8 * 2 ** 30 - 1, MTIME.getTime(), 'File', 0, 0, '', ''])
  assert.equal(buf.toString('latin1', 512 + 100, 512 + 108), '0000640\0')
  assert.equal(buf.toString('latin1', 512 + 124, 512 + 136), '77777777777\0')
  assert.equal(buf.toString('latin1', 512 + 257, 512 + 265), 'ustar\u000000')
  const cksum = buf.toString('latin1', 512 + 148, 512 + 156)
  assert.match(cksum, /^[0-7]{6}\0 $/)
  let sum = 0
  for (let i = 512; i < 1024; i++) sum += i >= 512 + 148 && i < 512 + 156 ? 0x20 : buf[i]!
  assert.equal(parseInt(cksum, 8), sum)
  const d = decodeUstarHeader(buf, 512)
  assert.deepEqual({ ...d }, { path, mode: 0o640, size: 8 * 2 ** 30 - 1, type: '0', linkpath: '', checksumValid: true, magic: 'ustar' })

  assert.equal(encodeUstarHeader(buf, 0, { path: 'l', mode: 0o777, size: 0, mtimeSec: 0, type: '2', linkpath: 'a'.repeat(100) }), true)
  assert.deepEqual({ ...decodeUstarHeader(buf, 0) }, { path: 'l', mode: 0o777, size: 0, type: '2', linkpath: 'a'.repeat(100), checksumValid: true, magic: 'ustar' })
})

test('encodeUstarHeader asks for pax when needed, and throws on what no header holds', () => {
  const buf = Buffer.alloc(512, 0xaa)
  const base = { mode: 0o644, size: 0, mtimeSec: MTIME_SEC, type: '0' } as const
  for (const path of ['x'.repeat(101), `/${'x'.repeat(100)}`, `${'x'.repeat(156)}/y`, `${'x'.repeat(100)}/`]) {
    assert.equal(encodeUstarHeader(buf, 0, { ...base, path }), false, path)
  }
  assert.equal(encodeUstarHeader(buf, 0, { ...base, path: 'l', type: '2', linkpath: 'x'.repeat(101) }), false)
  assert.equal(encodeUstarHeader(buf, 0, { ...base, path: 'caf\xc3\xa9\xff' }), true, 'names are bytes, stored as they are')
  assert.throws(() => encodeUstarHeader(buf, 0, { ...base, path: 'caf\u0100' }), /not a byte string/)
  assert.throws(() => encodeUstarHeader(buf, 0, { ...base, path: 'huge', size: 8 * 2 ** 30 }), /8 GiB/)
  assert.throws(() => encodeUstarHeader(buf, 0, { ...base, path: 'a\0b' }), /NUL/)
  assert.throws(() => encodeUstarHeader(buf, 1, { ...base, path: 'a' }), /512 bytes/)
})

test('decodeUstarHeader accepts a signed checksum and tells ustar from GNU headers', () => {
  const buf = Buffer.alloc(512)
  assert.equal(encodeUstarHeader(buf, 0, { path: 'a', mode: 0o644, size: 3, mtimeSec: 0, type: '0' }), true)
  // A raw UTF-8 name, as GNU tar --format=ustar stores it, summed with signed bytes (old tars did).
  const name = Buffer.from('café')
  name.copy(buf, 0)
  let signed = 8 * 0x20
  for (let i = 0; i < 512; i++) if (i < 148 || i >= 156) signed += buf[i]! > 127 ? buf[i]! - 256 : buf[i]!
  buf.write(signed.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1')
  assert.deepEqual([decodeUstarHeader(buf, 0).checksumValid, decodeUstarHeader(buf, 0).path], [true, name.toString('latin1')], 'the name as its bytes')
  buf[153] = buf[153]! ^ 1 // the checksum's last digit
  assert.equal(decodeUstarHeader(buf, 0).checksumValid, false)
  buf.write('ustar  \0', 257, 'latin1')
  assert.equal(decodeUstarHeader(buf, 0).magic, 'gnu')
  buf.write('\0\0\0\0\0\0\0\0', 257, 'latin1')
  assert.equal(decodeUstarHeader(buf, 0).magic, null)
})

test('decodePaxRecords reads newlines in values and refuses malformed records', () => {
  const body = Buffer.from(new Pax({ path: 'ü\nx=y', linkpath: 'l' }).encodeBody())
  assert.deepEqual([...decodePaxRecords(body)], [['path', byteStringOf('ü\nx=y')], ['linkpath', 'l']], 'values as their bytes')
  for (const bad of ['8 path=a\n', '7 path=a', '9 path=a\nX', '5 =a\n', 'path=a\n', '7 path\n', '0 \n']) {
    assert.throws(() => decodePaxRecords(Buffer.from(bad)), /malformed pax record/, JSON.stringify(bad))
  }
})

function tarCmd(args: string[], input?: Buffer, cwd?: string): Buffer {
  const r = spawnSync('tar', args, { input, cwd, maxBuffer: 1 << 30 })
  assert.equal(r.status, 0, `tar ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

function tempDir(t: { after: (fn: () => void) => void }): string {
  const d = mkdtempSync(join(tmpdir(), 'tar-format-test-'))
  t.after(() => rmSync(d, { recursive: true, force: true }))
  return d
}

test('GNU tar lists our archive and extracts the same bytes, modes and link targets', { skip: noTar }, async (t) => {
  const tar = await pack(SPECS)
  const listing = tarCmd(['-tvf', '-'], tar).toString('utf8').trimEnd().split('\n')
  assert.equal(listing.length, SPECS.length)
  const out = tempDir(t)
  tarCmd(['-xpf', '-', '-C', out], tar)
  for (const s of SPECS) {
    const abs = join(out, s.path)
    const st = lstatSync(abs)
    if (s.type === 'd') assert.ok(st.isDirectory(), s.path)
    else if (s.type === 'l') {
      assert.ok(st.isSymbolicLink(), s.path)
      assert.equal(readlinkSync(abs), s.target)
      continue
    } else {
      assert.ok(st.isFile(), s.path)
      assert.deepEqual(readFileSync(abs), s.data, s.path)
      assert.equal(Math.floor(st.mtimeMs / 1000), MTIME_SEC, s.path)
    }
    assert.equal(st.mode & 0o7777, s.mode, s.path)
  }
  const count = (d: string): number => readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + 1 + (e.isDirectory() ? count(join(d, e.name)) : 0), 0)
  assert.equal(count(out), SPECS.length, 'nothing more was extracted')
})

test('TarReader reads what GNU tar writes as ustar and as pax', { skip: noTar }, (t) => {
  const src = tempDir(t)
  const longDir = `t/${'d'.repeat(98)}` // 101 bytes with its '/': GNU tar splits it, as the file below
  mkdirSync(join(src, longDir), { recursive: true })
  writeFileSync(join(src, 't/empty'), '')
  writeFileSync(join(src, 't/block'), Buffer.alloc(512, 1))
  writeFileSync(join(src, 't/' + 'n'.repeat(100)), 'a 100-byte name')
  writeFileSync(join(src, `${longDir}/${'f'.repeat(99)}`), 'split into prefix and name')
  chmodSync(join(src, 't/block'), 0o600)
  symlinkSync('block', join(src, 't/link'))
  const want: ReadEntry[] = [
    { type: 'd', path: 't', mode: 0o755, size: 0, linkpath: '', data: Buffer.alloc(0) },
    { type: 'd', path: longDir, mode: 0o755, size: 0, linkpath: '', data: Buffer.alloc(0) },
    { type: 'f', path: `${longDir}/${'f'.repeat(99)}`, mode: 0o644, size: 26, linkpath: '', data: Buffer.from('split into prefix and name') },
    { type: 'f', path: 't/block', mode: 0o600, size: 512, linkpath: '', data: Buffer.alloc(512, 1) },
    { type: 'f', path: 't/empty', mode: 0o644, size: 0, linkpath: '', data: Buffer.alloc(0) },
    { type: 'l', path: 't/link', mode: 0o777, size: 0, linkpath: 'block', data: Buffer.alloc(0) },
    { type: 'f', path: 't/' + 'n'.repeat(100), mode: 0o644, size: 15, linkpath: '', data: Buffer.from('a 100-byte name') },
  ]
  chmodSync(join(src, 't'), 0o755)
  chmodSync(join(src, longDir), 0o755)
  const common = ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '-C', src, '-cf', '-', 't']
  const ustar = tarCmd(['--format=ustar', ...common])
  assert.equal(ustar.length % 10240, 0, 'GNU tar pads to whole records: trailing zero blocks are fine')
  const byPath = (a: { path: string }, b: { path: string }): number => (a.path < b.path ? -1 : 1)
  assert.deepEqual(readAll(ustar, 1000).sort(byPath), [...want].sort(byPath))

  writeFileSync(join(src, 't/ünïcode-' + 'u'.repeat(150)), 'pax')
  const pax = readAll(tarCmd(['--format=pax', ...common]))
  assert.deepEqual(pax.find((e) => e.path.startsWith(byteStringOf('t/ü')))?.path, byteStringOf('t/ünïcode-' + 'u'.repeat(150)))
  writeFileSync(Buffer.from(`${src}/t/not-utf8-\xff-${'v'.repeat(150)}`, 'latin1'), 'binary')
  const binary = readAll(tarCmd(['--format=pax', ...common]))
  assert.ok(binary.some((e) => e.path === `t/not-utf8-\xff-${'v'.repeat(150)}`), 'GNU tar writes hdrcharset=BINARY; the bytes come back')
  assert.equal(pax.length, want.length + 1)
})

test('TarReader refuses GNU-format archives, long names first of all, with a clear error', { skip: noTar }, (t) => {
  const src = tempDir(t)
  writeFileSync(join(src, 'n'.repeat(120)), 'long')
  assert.throws(() => readAll(tarCmd(['--format=gnu', '-C', src, '-cf', '-', 'n'.repeat(120)])), (err: unknown) => {
    assert.ok(err instanceof UnsafeArchiveError)
    assert.match(err.message, /refused type \(GNU long name, from tar --format=gnu/)
    return true
  })
  writeFileSync(join(src, 'short'), 'short')
  assert.throws(() => readAll(tarCmd(['--format=gnu', '-C', src, '-cf', '-', 'short'])), /GNU-format header: only POSIX ustar and pax/)
})

/** One crafted entry by node-tar's own encoder, followed by the end blocks. */
function crafted(h: ConstructorParameters<typeof Header>[0], body = Buffer.alloc(0)): Buffer {
  const block = Buffer.alloc(512)
  new Header(h).encode(block, 0)
  const padded = Buffer.alloc(Math.ceil(body.length / 512) * 512)
  body.copy(padded)
  return Buffer.concat([block, padded, Buffer.alloc(1024)])
}

test('TarReader refuses corrupt, truncated, trailing and foreign content', async () => {
  const refused = (tar: Buffer, why: RegExp, piece?: number): void => {
    assert.throws(() => readAll(tar, piece), (err: unknown) => err instanceof UnsafeArchiveError && why.test(err.message))
  }
  const tar = await pack([dir('a'), file('a/f', 'hello'), link('a/l', 'f'), file('caf\u00e9', 'pax')])
  assert.equal(readAll(Buffer.concat([tar, Buffer.alloc(512 * 18)])).length, 4, 'zero padding after the end is fine')

  const corrupt = Buffer.from(tar)
  corrupt[514] = corrupt[514]! ^ 1 // in a/f's name
  refused(corrupt, /bad checksum/)
  for (const cut of [100, 512, 512 + 300, 1024 + 2, 1536, tar.length - 1024, tar.length - 512, tar.length - 1]) {
    refused(tar.subarray(0, cut), /truncated/)
    refused(tar.subarray(0, cut), /truncated/, 7)
  }
  const garbage = Buffer.alloc(512)
  garbage[100] = 1
  refused(Buffer.concat([tar, garbage]), /data after the end/)
  refused(Buffer.concat([tar, Buffer.alloc(100)]), /truncated/)
  refused(Buffer.concat([tar.subarray(0, 512), Buffer.alloc(512), tar.subarray(512)]), /lone zero block/)

  const base = { mode: 0o644, uid: 0, gid: 0, size: 0, mtime: MTIME }
  refused(crafted({ ...base, path: 'hard', type: 'Link', linkpath: 'a/f' }), /refused type \(hard link\)/)
  refused(crafted({ ...base, path: 'fifo', type: 'FIFO' }), /refused type \(fifo\)/)
  refused(crafted({ ...base, path: 'dev', type: 'CharacterDevice' }), /refused type \(character device\)/)
  refused(crafted({ ...base, path: 'g', type: 'GlobalExtendedHeader', size: 0 }), /refused type \(pax global header\)/)
  refused(crafted({ ...base, path: 'd/', type: 'Directory', size: 512 }, Buffer.alloc(512, 1)), /a directory with data/)

  const paxSize = new Pax({ path: 'p', size: 9 }).encode()
  refused(Buffer.concat([paxSize, crafted({ ...base, path: 'p', type: 'File', size: 3 }, Buffer.from('abc'))]), /pax size differs/)
  const badPax = Buffer.from(new Pax({ path: 'p' }).encode())
  badPax[512] = 0x78 // 'x' for the record's length digit
  refused(Buffer.concat([badPax, crafted({ ...base, path: 'p', type: 'File' })]), /pax header is malformed/)

  const v7 = crafted({ ...base, path: 'old', type: 'File' })
  v7.fill(0, 257, 265)
  let sum = 8 * 0x20
  for (let i = 0; i < 512; i++) if (i < 148 || i >= 156) sum += v7[i]!
  v7.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1')
  refused(v7, /no ustar magic/)
})
