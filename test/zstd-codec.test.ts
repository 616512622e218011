import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Readable, Writable, type Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import zlib from 'node:zlib'
import { test } from 'node:test'
import { CompressionError, UsageError } from '../src/core/errors.js'
import {
  FrameBoundaryTracker,
  createZstdCompressor,
  createZstdDecompressor,
  zstdBackend,
  type ZstdBackend,
} from '../src/archive/zstd-codec.js'

const ZSTD_CLI = '/usr/bin/zstd'
const hasCli = existsSync(ZSTD_CLI)
const hasNodeZstd = typeof (zlib as unknown as { createZstdCompress?: unknown }).createZstdCompress === 'function'
/** zstd-napi is an optional dependency: an install without a compiler (or prebuild) lacks it. */
const hasNapi = ((): boolean => {
  try {
    createRequire(import.meta.url)('zstd-napi')
    return true
  } catch {
    return false
  }
})()
const napiSkip = hasNapi ? false : 'zstd-napi (an optional dependency) is not installed or not built here'
const backends: { backend: ZstdBackend; skip: string | false }[] = [
  { backend: 'zstd-codec', skip: false },
  { backend: 'zstd-napi', skip: napiSkip },
  { backend: 'node:zlib', skip: hasNodeZstd ? false : `node:zlib has no zstd on Node ${process.version}` },
]

/** ~size bytes shaped like the real input: tar-ish headers and playlist text, some noise. */
function corpus(size: number): Buffer {
  const parts: Buffer[] = []
  let total = 0
  for (let i = 0; total < size; i++) {
    const block =
      i % 64 === 63
        ? randomBytes(256)
        : Buffer.from(`music/${i % 997}/${i}.m3u\0\0\0\0\0\0#EXTM3U\n#EXTINF:${i % 300},Artist ${i % 5003} - Title ${(i * 7919) % 100003}\nhttp://cdn.example/${(i * 104729) % 1000003}.mp3\n`)
    parts.push(block)
    total += block.length
  }
  return Buffer.concat(parts).subarray(0, size)
}

function chunks(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size))
  return out
}

async function run(input: Buffer[], transform: Transform): Promise<Buffer> {
  const out: Buffer[] = []
  await pipeline(
    Readable.from(input),
    transform,
    new Writable({
      write(chunk: Buffer, _enc, done) {
        out.push(chunk)
        done()
      },
    }),
  )
  return Buffer.concat(out)
}

/** Reads a transform to its end, for tests that write to it by hand. */
async function collect(transform: Transform): Promise<Buffer> {
  const out: Buffer[] = []
  for await (const chunk of transform) out.push(chunk as Buffer)
  return Buffer.concat(out)
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

test('zstdBackend: auto prefers node:zlib, then zstd-napi, then zstd-codec; SNAPSHOT_ZSTD forces a backend', () => {
  assert.equal(zstdBackend({}), hasNodeZstd ? 'node:zlib' : hasNapi ? 'zstd-napi' : 'zstd-codec')
  assert.equal(zstdBackend({ SNAPSHOT_ZSTD: 'wasm' }), 'zstd-codec')
  if (hasNodeZstd) assert.equal(zstdBackend({ SNAPSHOT_ZSTD: 'node' }), 'node:zlib')
  else assert.throws(() => zstdBackend({ SNAPSHOT_ZSTD: 'node' }), UsageError)
  if (hasNapi) assert.equal(zstdBackend({ SNAPSHOT_ZSTD: 'napi' }), 'zstd-napi')
  else assert.throws(() => zstdBackend({ SNAPSHOT_ZSTD: 'napi' }), UsageError)
  assert.throws(() => zstdBackend({ SNAPSHOT_ZSTD: 'brotli' }), UsageError)
})

for (const { backend, skip } of backends) {
  test(`${backend}: a 20 MB round trip, fed in 1 MiB chunks and as one 20 MB write`, { skip }, async () => {
    const data = corpus(20 << 20)
    const z = await run(chunks(data, 1 << 20), await createZstdCompressor(3, backend))
    assert.ok(z.length < data.length / 2, `compressed to ${z.length}`)
    // Small and odd-sized compressed chunks exercise the frame walker's header reassembly.
    assert.equal(sha(await run(chunks(z, 4093), await createZstdDecompressor(backend))), sha(data))
    // One 20 MB chunk would abort zstd-codec's 16 MiB heap if it were handed over whole.
    const z2 = await run([data], await createZstdCompressor(3, backend))
    assert.equal(sha(await run([z2], await createZstdDecompressor(backend))), sha(data))
  })

  test(`${backend}: zstd -dc reads what we write, and we read what zstd -3 writes`, { skip: skip || (!hasCli && 'no zstd CLI') }, async () => {
    const data = corpus(3 << 20)
    const ours = await run(chunks(data, 256 << 10), await createZstdCompressor(3, backend))
    const cli = spawnSync(ZSTD_CLI, ['-dc'], { input: ours, maxBuffer: 64 << 20 })
    assert.equal(cli.status, 0, String(cli.stderr))
    assert.equal(sha(cli.stdout), sha(data))

    const theirs = spawnSync(ZSTD_CLI, ['-3', '-c'], { input: data, maxBuffer: 64 << 20 })
    assert.equal(theirs.status, 0, String(theirs.stderr))
    assert.equal(sha(await run(chunks(theirs.stdout, 64 << 10), await createZstdDecompressor(backend))), sha(data))
  })

  test(`${backend}: a truncated, empty or foreign stream is a CompressionError, not short output`, { skip }, async () => {
    const data = corpus(1 << 20)
    const z = await run([data], await createZstdCompressor(3, backend))
    for (const cut of [z.subarray(0, z.length - 1), z.subarray(0, z.length >> 1), z.subarray(0, 3)]) {
      await assert.rejects(run([cut], await createZstdDecompressor(backend)), CompressionError)
    }
    await assert.rejects(run([], await createZstdDecompressor(backend)), CompressionError)
    await assert.rejects(run([Buffer.from('#EXTM3U\nnot zstd at all\n')], await createZstdDecompressor(backend)), CompressionError)
    if (hasCli) {
      // Frames from the CLI carry a content checksum, so damage anywhere is caught. (Ours carry
      // none, zstd-codec cannot write one: the archive's signed sha256 is what guards them.)
      const theirs = spawnSync(ZSTD_CLI, ['-3', '-c'], { input: data, maxBuffer: 64 << 20 }).stdout
      theirs.fill(0xa5, theirs.length >> 1, (theirs.length >> 1) + 64)
      await assert.rejects(run([theirs], await createZstdDecompressor(backend)), CompressionError)
    }
  })

  test(`${backend}: a reader that does not read holds the writer back, and all flows once it reads`, { skip }, async () => {
    const data = corpus(8 << 20)
    const z = await run([data], await createZstdCompressor(3, backend))
    const cases = [
      { transform: await createZstdCompressor(3, backend), input: chunks(data, 1 << 20) },
      { transform: await createZstdDecompressor(backend), input: chunks(z, 64 << 10) },
    ]
    const outputs: Buffer[] = []
    for (const { transform, input } of cases) {
      let accepted = 0
      while (accepted < input.length && transform.write(input[accepted])) accepted++
      await new Promise((resolve) => setImmediate(resolve))
      assert.ok(accepted < 4, `${accepted} writes accepted with nobody reading`)
      // What waits unread is the output of about one input chunk, not of everything written.
      assert.ok(transform.readableLength < 2 << 20, `${transform.readableLength} bytes buffered unread`)
      const out = collect(transform) // starts reading: the held writes must now go through
      for (const chunk of input.slice(accepted + 1)) transform.write(chunk)
      transform.end()
      outputs.push(await out)
    }
    assert.equal(sha(await run([outputs[0]!], await createZstdDecompressor(backend))), sha(data))
    assert.equal(sha(outputs[1]!), sha(data))
  })

  test(`${backend}: a reader destroying the stream mid-output does not break later streams`, { skip }, async () => {
    const c = await createZstdCompressor(3, backend)
    c.on('error', () => undefined)
    c.on('data', () => c.destroy())
    c.write(corpus(2 << 20))
    await new Promise<void>((resolve) => c.once('close', resolve))
    const data = corpus(1 << 20)
    const z = await run([data], await createZstdCompressor(3, backend))
    assert.equal(sha(await run([z], await createZstdDecompressor(backend))), sha(data))
  })
}

test('zstd-napi: levels above what zstd-codec fits, up to 22', { skip: napiSkip }, async () => {
  const data = corpus(1 << 20)
  const z = await run([data], await createZstdCompressor(12, 'zstd-napi'))
  assert.equal(sha(await run([z], await createZstdDecompressor('zstd-napi'))), sha(data))
  await assert.rejects(createZstdCompressor(23, 'zstd-napi'), UsageError)
  await assert.rejects(createZstdCompressor(0, 'zstd-napi'), UsageError)
})

test('zstd-napi: our compressor (one output buffer, copies handed on) makes frames another implementation reads', { skip: napiSkip }, async () => {
  // The build's shape: 1 MiB chunks of tar-like text, the pushed chunks all held until the end
  // (a chunk that shared the reused output buffer would show up as damage here).
  const data = corpus(9 << 20)
  const compressor = await createZstdCompressor(3, 'zstd-napi')
  assert.equal(compressor.constructor.name, 'NapiCompress')
  const z = await run(chunks(data, 1 << 20), compressor)
  assert.ok(z.length < data.length / 4, `compressed to ${z.length} of ${data.length} bytes`)
  assert.equal(sha(await run(chunks(z, 100_000), await createZstdDecompressor('zstd-codec'))), sha(data))
  const empty = await run([], await createZstdCompressor(3, 'zstd-napi'))
  assert.equal(sha(await run([empty], await createZstdDecompressor('zstd-codec'))), sha(Buffer.alloc(0)), 'an empty stream is one empty frame')
})

test('zstd-codec: streams free their WASM memory, and many can run at once', async () => {
  const data = corpus(512 << 10)
  // zstd-codec's own Transforms leak their context: the ~33rd stream of a process died of OOM.
  for (let i = 0; i < 50; i++) {
    const z = await run([data], await createZstdCompressor(3, 'zstd-codec'))
    assert.equal((await run([z], await createZstdDecompressor('zstd-codec'))).length, data.length)
  }
  // One heap fits about three live level-3 compressors; each stream has an instance of its own.
  const results = await Promise.all(
    Array.from({ length: 8 }, async () => {
      const z = await run(chunks(data, 64 << 10), await createZstdCompressor(3, 'zstd-codec'))
      return sha(await run([z], await createZstdDecompressor('zstd-codec')))
    }),
  )
  assert.deepEqual(new Set(results), new Set([sha(data)]))
})

test('zstd-codec: a level its 16 MiB heap cannot hold is a UsageError up front', async () => {
  await assert.rejects(createZstdCompressor(10, 'zstd-codec'), UsageError)
  await assert.rejects(createZstdCompressor(0, 'zstd-codec'), UsageError)
  const z = await run([corpus(1 << 20)], await createZstdCompressor(9, 'zstd-codec'))
  assert.ok(z.length > 0)
})


test('FrameBoundaryTracker: frames back to back and skippable frames end on a boundary', () => {
  // A frame holding one raw block of "hi" (single segment, 1-byte content size), then a
  // skippable frame of 3 bytes, then the same frame again.
  const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x02, 0x11, 0x00, 0x00, 0x68, 0x69])
  const skippable = Buffer.from([0x50, 0x2a, 0x4d, 0x18, 0x03, 0x00, 0x00, 0x00, 1, 2, 3])
  const whole = Buffer.concat([frame, skippable, frame])
  for (let split = 0; split <= whole.length; split++) {
    const tracker = new FrameBoundaryTracker()
    tracker.push(whole.subarray(0, split))
    tracker.push(whole.subarray(split))
    assert.equal(tracker.endProblem(), undefined, `split at ${split}`)
  }
  for (let cut = 1; cut < whole.length; cut++) {
    const tracker = new FrameBoundaryTracker()
    tracker.push(whole.subarray(0, cut))
    const atBoundary = cut === frame.length || cut === frame.length + skippable.length
    assert.equal(tracker.endProblem() === undefined, atBoundary, `cut at ${cut}`)
  }
  if (hasCli) {
    const cli = spawnSync(ZSTD_CLI, ['-dc'], { input: whole })
    assert.equal(String(cli.stdout), 'hihi')
  }
})
