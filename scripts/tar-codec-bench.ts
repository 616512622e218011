/**
 * Micro-benchmark of the project's own tar codec (src/archive/ustar-header.ts, tar-reader.ts)
 * against node-tar's low-level Header and Parser, the pieces a fast path would otherwise be built
 * on (README, "Dependencies"). Four jobs, each over N entries of a playlist-like tree (paths of
 * ~40 bytes, 200-byte files):
 *   - header encode: N ustar headers into a reused 4 MiB buffer (ours: encodeUstarHeader; node-tar:
 *     new Header({...}).encode(buf, off));
 *   - header decode: the same N headers read back (ours: decodeUstarHeader; node-tar: new Header(buf, off));
 *   - parse: a tar stream of N entries (header + one data block each) fed in 1 MiB chunks, entries
 *     seen and data skipped (ours: TarReader; node-tar: Parser with onReadEntry + resume).
 * The stream is one 1 MiB chunk of 1,024 entries written N/1,024 times, so memory stays small at 1M.
 * Prints one line per job with seconds and microseconds per entry, and the ratio. CPU only: no disk.
 *
 *   npm run build && node dist/scripts/tar-codec-bench.js --entries 100000
 */
import { parseArgs } from 'node:util'
import { Header, Parser } from 'tar'
import { BLOCK, decodeUstarHeader, encodeUstarHeader, type UstarEntry } from '../src/archive/ustar-header.js'
import { TarReader } from '../src/archive/tar-reader.js'
import { isRunAsMain } from './run-as-main.js'

const PER_CHUNK = 1024
const SPAN = 4 << 20
const MTIME = 1_795_257_700

function entryAt(i: number): UstarEntry {
  return { path: `lists/d${i % 997}/s${i % 31}/playlist-${i}.m3u`, mode: 0o644, size: 200, mtimeSec: MTIME, type: '0' }
}

function time(fn: () => void): number {
  const t = process.hrtime.bigint()
  fn()
  return Number(process.hrtime.bigint() - t) / 1e9
}

async function timeAsync(fn: () => Promise<void>): Promise<number> {
  const t = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - t) / 1e9
}

/** 1,024 entries: header + 200 bytes padded to a block, 1 MiB in all. */
function streamChunk(): Buffer {
  const buf = Buffer.alloc(PER_CHUNK * 2 * BLOCK)
  for (let i = 0; i < PER_CHUNK; i++) {
    if (!encodeUstarHeader(buf, i * 2 * BLOCK, entryAt(i))) throw new Error('a bench entry needs a pax header')
    buf.fill(0x61, i * 2 * BLOCK + BLOCK, i * 2 * BLOCK + BLOCK + 200)
  }
  return buf
}

export async function runTarCodecBench(entries: number, log: (line: string) => void): Promise<void> {
  const buf = Buffer.alloc(SPAN)
  const slots = SPAN / BLOCK
  const rows: [string, number, number][] = []

  const oursEncode = time(() => {
    for (let i = 0; i < entries; i++) encodeUstarHeader(buf, (i % slots) * BLOCK, entryAt(i))
  })
  const mtime = new Date(MTIME * 1000)
  const tarEncode = time(() => {
    for (let i = 0; i < entries; i++) {
      const e = entryAt(i)
      new Header({ path: e.path, mode: e.mode, size: e.size, mtime, type: 'File', uid: 0, gid: 0 }).encode(buf, (i % slots) * BLOCK)
    }
  })
  rows.push(['header encode', oursEncode, tarEncode])

  for (let i = 0; i < slots; i++) encodeUstarHeader(buf, i * BLOCK, entryAt(i))
  let sink = 0
  const oursDecode = time(() => {
    for (let i = 0; i < entries; i++) sink += decodeUstarHeader(buf, (i % slots) * BLOCK).size
  })
  const tarDecode = time(() => {
    for (let i = 0; i < entries; i++) sink += new Header(buf, (i % slots) * BLOCK).size ?? 0
  })
  rows.push(['header decode', oursDecode, tarDecode])

  const chunk = streamChunk()
  const chunks = Math.ceil(entries / PER_CHUNK)
  let seen = 0
  const oursParse = time(() => {
    const reader = new TarReader({ entry: () => void seen++, data: () => {}, end: () => {} })
    for (let c = 0; c < chunks; c++) reader.write(chunk)
    reader.write(Buffer.alloc(2 * BLOCK))
    reader.close()
  })
  const tarParse = await timeAsync(
    () =>
      new Promise<void>((resolve, reject) => {
        const parser = new Parser({ strict: true, onReadEntry: (e) => void (seen++, e.resume()) })
        parser.on('end', () => resolve())
        parser.on('error', reject)
        let c = 0
        const feed = (): void => {
          while (c < chunks) {
            c++
            if (!parser.write(chunk)) return void parser.once('drain', feed)
          }
          parser.end(Buffer.alloc(2 * BLOCK))
        }
        feed()
      }),
  )
  rows.push(['parse stream', oursParse, tarParse])
  if (seen !== 2 * chunks * PER_CHUNK || sink === 0) throw new Error(`the parsers saw ${seen} entries, expected ${2 * chunks * PER_CHUNK}`)

  const us = (s: number, n: number): string => ((s / n) * 1e6).toFixed(2)
  log(`tar codec, ${entries} entries (parse: ${chunks * PER_CHUNK}), node ${process.version}`)
  for (const [job, ours, theirs] of rows) {
    const n = job === 'parse stream' ? chunks * PER_CHUNK : entries
    log(`${job.padEnd(14)} ours ${ours.toFixed(3)} s (${us(ours, n)} us/entry)  node-tar ${theirs.toFixed(3)} s (${us(theirs, n)} us/entry)  node-tar/ours ${(theirs / ours).toFixed(1)}x`)
  }
}

if (isRunAsMain(import.meta.url)) {
  const { values } = parseArgs({ options: { entries: { type: 'string', default: '100000' } } })
  const entries = Number(values.entries)
  if (!Number.isSafeInteger(entries) || entries < PER_CHUNK) throw new Error(`--entries takes a whole number of at least ${PER_CHUNK}`)
  await runTarCodecBench(entries, (l) => console.log(l))
}
