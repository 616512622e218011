/**
 * The one place that knows which zstd implementation runs. Node >= 22.15 has zstd in `node:zlib`;
 * on Node 20 we use zstd-napi (a native binding, an optional dependency: it is built at install
 * time, or fetched prebuilt) and fall back to zstd-codec (WASM, 3-5x slower) where it did not
 * install. All three produce and read standard zstd frames.
 *
 * zstd-napi's own CompressStream/DecompressStream are sound Transforms (each chunk is processed
 * whole before the callback, as ours below; contexts are freed by GC and reported to it as
 * external memory). We route their plain Errors to CompressionError and add the frame boundary
 * check: they accept an empty stream. Decompression drives its binding ourselves (NapiDecompress):
 * theirs allocates a fresh 128 KiB output buffer on every call, most of which output nothing when
 * fed small slices, which left ~75 MB of dead buffers per 1.2 MB delta for the collector.
 *
 * zstd-codec needs care (BENCHMARKS.md, "Facts the code's comments rely on", and measured while
 * writing this file):
 * - its whole-buffer APIs abort above ~8 MB; only its streaming bindings work at size;
 * - every WASM instance has a fixed 16 MiB heap: an input chunk over ~3 MB, a level above 9, or a
 *   few live level-3 compressors in one instance abort it with `throw "abort(OOM)"` (a string,
 *   thrown synchronously, which escapes a Transform's write() and kills the process);
 * - an aborted instance is dead for good, and it prints "OOM" to stdout unless told otherwise;
 * - the Transforms in `zstd-codec/lib/zstd-stream` never `delete()` their embind stream, so every
 *   stream leaks its zstd context: the ~33rd stream of the process dies of OOM;
 * - its decoder accepts a stream cut at a block boundary without a word.
 * So we drive the same streaming bindings from our own Transform: inputs fed in slices, the
 * binding deleted on close, one WASM instance per live stream (idle instances are cached and
 * reused), anything thrown turned into a CompressionError, and frame boundaries checked at the end.
 *
 * Over ~350 lines on purpose: the three backends and their guards belong together, so the rest of
 * the code sees one compress and one decompress whatever runs underneath.
 */
import { createRequire } from 'node:module'
import { Transform, type TransformCallback } from 'node:stream'
import zlib from 'node:zlib'
import { CompressionError, SnapshotError, UsageError } from '../core/errors.js'

export type ZstdBackend = 'node:zlib' | 'zstd-napi' | 'zstd-codec'

/** zstd-codec's heap cannot hold the window and tables of level 10 and above. */
const CODEC_MAX_LEVEL = 9
const ZSTD_MAX_LEVEL = 22
/** Input slice handed to the WASM binding at once: far below what its heap can copy in. */
const CODEC_SLICE = 64 * 1024
/** Idle WASM instances kept for reuse (16 MiB each). */
const CODEC_MAX_IDLE = 2

/** zlib's zstd API (Node >= 22.15 / 24): @types/node 20 does not declare it. */
interface NodeZstd {
  createZstdCompress(options?: { params?: Record<number, number> }): Transform
  createZstdDecompress(): Transform
  constants: Record<string, number | undefined>
}

function nodeZstd(): NodeZstd | undefined {
  const z = zlib as unknown as Partial<NodeZstd>
  return typeof z.createZstdCompress === 'function' && typeof z.createZstdDecompress === 'function'
    ? (z as NodeZstd)
    : undefined
}

/** The part of zstd-napi (CJS, optional, maybe not installed: no type import) that we use. */
interface ZstdNapi {
  CompressStream: new (parameters?: { compressionLevel?: number }) => Transform
  DecompressStream: new () => Transform
  /** Its low-level module (`zstd-napi/binding`), for NapiDecompress below; absent in a version without it. */
  binding?: NapiBinding
}

interface NapiBinding {
  DCtx: new () => { decompressStream(dst: Uint8Array, src: Uint8Array): [remaining: number, produced: number, consumed: number] }
  dStreamOutSize(): number
  CCtx?: new () => NapiCCtx
  cStreamOutSize?: () => number
  CParameter?: { compressionLevel?: number }
  EndDirective?: { continue?: number; end?: number }
}

interface NapiCCtx {
  setParameter(param: number, value: number): void
  compressStream2(dst: Uint8Array, src: Uint8Array, endOp: number): [remaining: number, produced: number, consumed: number]
}

let napiLoad: { module: ZstdNapi } | { error: unknown } | undefined

/** Loaded once, on first need; a failure (not installed, not built) is remembered too. */
function loadZstdNapi(): { module: ZstdNapi } | { error: unknown } {
  if (!napiLoad) {
    try {
      const m = createRequire(import.meta.url)('zstd-napi') as Partial<ZstdNapi>
      if (typeof m.CompressStream !== 'function' || typeof m.DecompressStream !== 'function') {
        throw new Error('zstd-napi has no CompressStream/DecompressStream (an unexpected version)')
      }
      let binding: NapiBinding | undefined
      try {
        const b = createRequire(import.meta.url)('zstd-napi/binding') as Partial<NapiBinding>
        if (typeof b.DCtx === 'function' && typeof b.dStreamOutSize === 'function') binding = b as NapiBinding
      } catch {
        binding = undefined // DecompressStream serves
      }
      napiLoad = { module: { ...(m as ZstdNapi), ...(binding ? { binding } : {}) } }
    } catch (error) {
      napiLoad = { error }
    }
  }
  return napiLoad
}

function requireZstdNapi(): ZstdNapi {
  const load = loadZstdNapi()
  if ('module' in load) return load.module
  const detail = load.error instanceof Error ? load.error.message.split('\n')[0] : String(load.error)
  throw new UsageError(
    `zstd-napi does not load (${detail}); it is an optional dependency built at install time: reinstall with a C++ compiler, or unset SNAPSHOT_ZSTD to fall back to the WASM build`,
    { cause: load.error },
  )
}

/**
 * node:zlib when this Node has it, else zstd-napi when it loads, else zstd-codec.
 * `SNAPSHOT_ZSTD` forces one: `node`, `napi` (a UsageError if it is not available) or `wasm`.
 */
export function zstdBackend(env: NodeJS.ProcessEnv = process.env): ZstdBackend {
  const forced = env['SNAPSHOT_ZSTD']
  switch (forced) {
    case undefined:
    case '':
    case 'auto':
      if (nodeZstd()) return 'node:zlib'
      return 'module' in loadZstdNapi() ? 'zstd-napi' : 'zstd-codec'
    case 'wasm':
      return 'zstd-codec'
    case 'napi':
      requireZstdNapi()
      return 'zstd-napi'
    case 'node':
      if (!nodeZstd()) {
        throw new UsageError(
          `SNAPSHOT_ZSTD=node, but Node ${process.version} has no zlib.createZstdCompress (Node >= 22.15 has); unset SNAPSHOT_ZSTD or set it to napi or wasm`,
        )
      }
      return 'node:zlib'
    default:
      throw new UsageError(`SNAPSHOT_ZSTD=${forced}: expected node, napi, wasm or auto`)
  }
}

/** The `SNAPSHOT_ZSTD` value that names a backend: what `snapshot --version` prints. */
export function zstdSetting(backend: ZstdBackend): 'node' | 'napi' | 'wasm' {
  return backend === 'node:zlib' ? 'node' : backend === 'zstd-napi' ? 'napi' : 'wasm'
}

let fallbackNoted = false

/**
 * The backend for a stream nobody chose one for. Falling back to the WASM build on its own
 * (zstd-napi did not build: no compiler at install time, or its install script was not allowed)
 * costs 3-5x in speed, so the operator hears of it, once per process, on stderr.
 */
function defaultBackend(): ZstdBackend {
  const backend = zstdBackend()
  const forced = process.env['SNAPSHOT_ZSTD']
  if (backend === 'zstd-codec' && forced !== 'wasm' && !fallbackNoted) {
    fallbackNoted = true
    const load = loadZstdNapi()
    const why = 'error' in load ? (load.error instanceof Error ? load.error.message.split('\n')[0] : String(load.error)) : ''
    process.stderr.write(
      `snapshot: note: zstd runs on the WASM fallback (zstd-codec, 3-5x slower) because zstd-napi does not load (${why}); reinstall with a C++ compiler, and npm's --allow-scripts=zstd-napi, or run on Node >= 22.15\n`,
    )
  }
  return backend
}

export async function createZstdCompressor(level = 3, backend: ZstdBackend = defaultBackend()): Promise<Transform> {
  const max = backend === 'zstd-codec' ? CODEC_MAX_LEVEL : ZSTD_MAX_LEVEL
  if (!Number.isInteger(level) || level < 1 || level > max) {
    const why = backend === 'zstd-codec' ? ' (zstd-codec, the WASM fallback, fits levels 1-9 in its 16 MiB heap)' : ''
    throw new UsageError(`zstd level ${level}: expected an integer from 1 to ${max}${why}`)
  }
  if (backend === 'node:zlib') {
    const z = requireNodeZstd()
    const levelParam = z.constants['ZSTD_c_compressionLevel'] ?? 100 // 100 is zstd's own enum value
    return wrapErrors(z.createZstdCompress({ params: { [levelParam]: level } }), 'compress')
  }
  if (backend === 'zstd-napi') {
    const { CompressStream, binding } = requireZstdNapi()
    const ours = binding && napiCompressParts(binding)
    return wrapErrors(construct(() => (ours ? new NapiCompress(ours, level) : new CompressStream({ compressionLevel: level })), 'compress'), 'compress')
  }
  return new CodecTransform(await leaseInstance(), 'compress', level)
}

export async function createZstdDecompressor(backend: ZstdBackend = defaultBackend()): Promise<Transform> {
  if (backend === 'node:zlib') {
    return checkFrameBoundaries(wrapErrors(requireNodeZstd().createZstdDecompress(), 'decompress'))
  }
  if (backend === 'zstd-napi') {
    const { DecompressStream, binding } = requireZstdNapi()
    return checkFrameBoundaries(wrapErrors(construct(() => (binding ? new NapiDecompress(binding) : new DecompressStream()), 'decompress'), 'decompress'))
  }
  return new CodecTransform(await leaseInstance(), 'decompress', 0)
}

function requireNodeZstd(): NodeZstd {
  const z = nodeZstd()
  if (!z) throw new UsageError(`Node ${process.version} has no zstd in node:zlib (Node >= 22.15 has)`)
  return z
}

function toCompressionError(err: unknown, what: string): SnapshotError {
  if (err instanceof SnapshotError) return err
  const detail = err instanceof Error ? err.message : String(err) // zstd-codec throws strings
  return new CompressionError(`zstd ${what}: ${detail}`, { cause: err })
}

/** A native context that cannot be made (out of memory) is a CompressionError too. */
function construct(make: () => Transform, what: string): Transform {
  try {
    return make()
  } catch (err) {
    throw toCompressionError(err, what)
  }
}

/** node:zlib and zstd-napi emit plain Errors; route them through the same typed error as the WASM backend. */
function wrapErrors(t: Transform, what: string): Transform {
  const destroy = t._destroy.bind(t)
  t._destroy = (err, cb) => destroy(err && toCompressionError(err, what), cb)
  return t
}

/** Makes a decoder refuse a stream that ends anywhere but on a frame boundary. */
function checkFrameBoundaries(t: Transform): Transform {
  const frames = new FrameBoundaryTracker()
  const transform = t._transform.bind(t)
  const flush = t._flush.bind(t)
  t._transform = (chunk: Buffer, encoding, cb) => {
    try {
      frames.push(chunk)
    } catch (err) {
      cb(toCompressionError(err, 'decompress'))
      return
    }
    transform(chunk, encoding, cb)
  }
  t._flush = (cb) => {
    const problem = frames.endProblem()
    if (problem) cb(new CompressionError(`zstd decompress: ${problem}`))
    else flush(cb)
  }
  return t
}

/**
 * Walks zstd frame and block headers without decoding (RFC 8878 §3.1), so that we can tell
 * whether the input stopped on a frame boundary. Cheap: a few bytes per 128 KiB block.
 */
export class FrameBoundaryTracker {
  private state: 'magic' | 'frameHeader' | 'blockHeader' | 'skippableSize' = 'magic'
  private readonly head = Buffer.alloc(4)
  private have = 0
  private need = 4
  private skip = 0
  private checksum = false
  private frames = 0

  push(chunk: Uint8Array): void {
    let pos = 0
    while (pos < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - pos)
        this.skip -= n
        pos += n
        continue
      }
      const n = Math.min(this.need - this.have, chunk.length - pos)
      this.head.set(chunk.subarray(pos, pos + n), this.have)
      this.have += n
      pos += n
      if (this.have === this.need) this.advance()
    }
  }

  /** Why the input so far is not a complete zstd stream, or undefined if it is. */
  endProblem(): string | undefined {
    if (this.state === 'magic' && this.have === 0 && this.skip === 0) {
      return this.frames > 0 ? undefined : 'the stream is empty'
    }
    return 'the stream ends in the middle of a frame (truncated)'
  }

  private expect(state: FrameBoundaryTracker['state'], need: number, skip = 0): void {
    this.state = state
    this.need = need
    this.have = 0
    this.skip = skip
  }

  private advance(): void {
    const head = this.head
    switch (this.state) {
      case 'magic': {
        const magic = head.readUInt32LE(0)
        if (magic === 0xfd2fb528) this.expect('frameHeader', 1)
        else if ((magic & 0xfffffff0) >>> 0 === 0x184d2a50) this.expect('skippableSize', 4)
        else throw new CompressionError(`zstd decompress: not a zstd stream (magic 0x${magic.toString(16)})`)
        return
      }
      case 'frameHeader': {
        const fhd = head[0]!
        if (fhd & 0x08) throw new CompressionError('zstd decompress: corrupt frame header (reserved bit set)')
        const singleSegment = (fhd >> 5) & 1
        this.checksum = ((fhd >> 2) & 1) === 1
        const dictIdBytes = [0, 1, 2, 4][fhd & 3]!
        const contentSizeBytes = [singleSegment, 2, 4, 8][fhd >> 6]!
        this.expect('blockHeader', 3, (singleSegment ? 0 : 1) + dictIdBytes + contentSizeBytes)
        return
      }
      case 'skippableSize':
        this.frames++
        this.expect('magic', 4, head.readUInt32LE(0))
        return
      case 'blockHeader': {
        const header = head[0]! | (head[1]! << 8) | (head[2]! << 16)
        const type = (header >> 1) & 3
        if (type === 3) throw new CompressionError('zstd decompress: corrupt block header (reserved block type)')
        const body = type === 1 ? 1 : header >>> 3 // an RLE block stores its one byte
        if (header & 1) {
          this.frames++
          this.expect('magic', 4, body + (this.checksum ? 4 : 0))
        } else {
          this.expect('blockHeader', 3, body)
        }
        return
      }
    }
  }
}

/**
 * zstd-napi's DecompressStream, but with an output buffer that is only replaced once it was handed
 * on. Theirs allocates a fresh 128 KiB buffer for every call, and most calls, fed our 2 KiB input
 * slices, produce nothing (a block is only output whole): decompressing a 1.2 MB delta archive made
 * ~75 MB of ArrayBuffers for the garbage collector, which a pull's peak memory showed as 25-30 MB
 * of dead buffers (bench-pullmem.md). The same loop and end-of-frame rule as theirs.
 */
class NapiDecompress extends Transform {
  readonly #dctx: InstanceType<NapiBinding['DCtx']>
  readonly #outSize: number
  #out: Buffer
  #inFrame = false

  constructor(binding: NapiBinding) {
    super()
    this.#dctx = new binding.DCtx()
    this.#outSize = binding.dStreamOutSize()
    this.#out = Buffer.allocUnsafe(this.#outSize)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    try {
      let src = chunk
      for (;;) {
        const [remaining, produced, consumed] = this.#dctx.decompressStream(this.#out, src)
        if (produced > 0) {
          this.push(this.#out.subarray(0, produced))
          this.#out = Buffer.allocUnsafe(this.#outSize)
        }
        src = src.subarray(consumed)
        if (src.length === 0 && (produced < this.#outSize || remaining === 0)) {
          this.#inFrame = remaining !== 0
          break
        }
      }
    } catch (err) {
      done(err as Error)
      return
    }
    done()
  }

  override _flush(done: TransformCallback): void {
    done(this.#inFrame ? new Error('Stream ended in middle of compressed data frame') : null)
  }
}

/** What NapiCompress needs of the binding; null in a version without it (CompressStream serves). */
interface NapiCompressParts {
  readonly CCtx: new () => NapiCCtx
  readonly outSize: number
  readonly levelParam: number
  readonly continueOp: number
  readonly endOp: number
}

function napiCompressParts(b: NapiBinding): NapiCompressParts | null {
  const levelParam = b.CParameter?.compressionLevel
  const continueOp = b.EndDirective?.continue
  const endOp = b.EndDirective?.end
  if (typeof b.CCtx !== 'function' || typeof b.cStreamOutSize !== 'function' || levelParam === undefined || continueOp === undefined || endOp === undefined) return null
  return { CCtx: b.CCtx, outSize: b.cStreamOutSize(), levelParam, continueOp, endOp }
}

const NO_INPUT = Buffer.alloc(0)

/**
 * zstd-napi's CompressStream, but with one output buffer for the stream's life, and only copies of
 * what it holds handed on. Theirs allocates a fresh 128 KiB buffer every time a call outputs
 * anything, however little: in a delta build at 1M files (~110 MB of tar) those dead buffers
 * were much of what waited for the collector at its peak (BENCHMARKS.md, "Delta build memory at
 * 1M, again").
 * The same loop and end-of-frame rule as theirs.
 */
class NapiCompress extends Transform {
  readonly #cctx: NapiCCtx
  readonly #parts: NapiCompressParts
  readonly #out: Buffer

  constructor(parts: NapiCompressParts, level: number) {
    super()
    this.#parts = parts
    this.#cctx = new parts.CCtx()
    this.#cctx.setParameter(parts.levelParam, level)
    this.#out = Buffer.allocUnsafe(parts.outSize)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#run(chunk, this.#parts.continueOp, done)
  }

  override _flush(done: TransformCallback): void {
    this.#run(NO_INPUT, this.#parts.endOp, done)
  }

  #run(chunk: Buffer, endOp: number, done: TransformCallback): void {
    try {
      let src = chunk
      let used = 0
      for (;;) {
        const [remaining, produced, consumed] = this.#cctx.compressStream2(this.#out.subarray(used), src, endOp)
        used += produced
        src = src.subarray(consumed)
        const finished = src.length === 0 && (endOp === this.#parts.continueOp || remaining === 0)
        if (used > 0 && (finished || used === this.#out.length)) {
          this.push(Buffer.from(this.#out.subarray(0, used))) // a copy: #out is written again
          used = 0
        }
        if (finished) break
      }
    } catch (err) {
      done(err as Error)
      return
    }
    done()
  }
}

// ---- zstd-codec (WASM) ----

/** The embind stream objects of zstd-codec's binding (see zstd-codec/lib/zstd-stream.js). */
interface EmbindStream {
  begin(level?: number): boolean
  transform(input: Uint8Array, onOutput: (out: Uint8Array) => void): boolean
  end(onOutput: (out: Uint8Array) => void): boolean
  delete(): void
}
interface EmscriptenModule {
  ZstdCompressStreamBinding: new () => EmbindStream
  ZstdDecompressStreamBinding: new () => EmbindStream
}
interface ModuleInit {
  print(line: string): void
  printErr(line: string): void
  onAbort(what: unknown): void
  onRuntimeInitialized(): void
}
type EmscriptenFactory = (module: ModuleInit) => unknown

/** One WASM instance with its own 16 MiB heap, leased to one stream at a time. */
interface CodecInstance {
  readonly module: EmscriptenModule
  dead: boolean
}

const idleInstances: CodecInstance[] = []
let factory: EmscriptenFactory | undefined

async function leaseInstance(): Promise<CodecInstance> {
  return idleInstances.pop() ?? (await instantiate())
}

function releaseInstance(instance: CodecInstance): void {
  if (!instance.dead && idleInstances.length < CODEC_MAX_IDLE) idleInstances.push(instance)
}

function instantiate(): Promise<CodecInstance> {
  // The emscripten factory behind zstd-codec/lib/module.js, loaded once; each call makes a fresh
  // instance. We call it ourselves so that its print hooks stay off our stdout.
  factory ??= createRequire(import.meta.url)('zstd-codec/lib/zstd-codec-binding-wasm.js') as EmscriptenFactory
  const load = factory
  return new Promise((resolve, reject) => {
    let instance: CodecInstance | undefined
    // Once initialised the module object is a thenable: never resolve a promise with it.
    const init: ModuleInit = {
      print: () => {},
      printErr: () => {}, // it only ever says "OOM", which the thrown abort string repeats
      onAbort: (what) => {
        if (instance) instance.dead = true
        else reject(toCompressionError(what, 'init'))
      },
      onRuntimeInitialized: () => {
        instance = { module: init as unknown as EmscriptenModule, dead: false }
        resolve(instance)
      },
    }
    try {
      load(init)
    } catch (err) {
      reject(toCompressionError(err, 'init'))
    }
  })
}

class CodecTransform extends Transform {
  #instance: CodecInstance | undefined
  readonly #binding: EmbindStream
  readonly #frames: FrameBoundaryTracker | undefined
  #inBinding = false
  readonly #onOutput = (out: Uint8Array): void => {
    // each output is a fresh copy out of the WASM heap (byteOffset 0), safe to keep
    this.push(Buffer.from(out.buffer, out.byteOffset, out.byteLength))
  }

  readonly #mode: 'compress' | 'decompress'

  constructor(instance: CodecInstance, mode: 'compress' | 'decompress', level: number) {
    super()
    this.#mode = mode
    this.#instance = instance
    try {
      const m = instance.module
      this.#binding = mode === 'compress' ? new m.ZstdCompressStreamBinding() : new m.ZstdDecompressStreamBinding()
      if (!(mode === 'compress' ? this.#binding.begin(level) : this.#binding.begin())) {
        throw new CompressionError(`zstd ${mode}: the WASM binding failed to start a stream`)
      }
    } catch (err) {
      instance.dead = true
      throw this.#failure(err)
    }
    this.#frames = mode === 'decompress' ? new FrameBoundaryTracker() : undefined
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#frames?.push(chunk)
    } catch (err) {
      callback(this.#failure(err))
      return
    }
    // Slices keep the WASM heap copy small. All of one chunk is processed before the callback:
    // Transform itself holds the next write back until the reader drains, which bounds memory
    // by the output of one input chunk (waiting for _read between slices stalled the stream).
    try {
      for (let pos = 0; pos < chunk.length; ) {
        if (this.destroyed) return
        const slice = chunk.subarray(pos, pos + CODEC_SLICE)
        pos += slice.length
        if (!this.#call((b) => b.transform(slice, this.#onOutput))) {
          throw new CompressionError(`zstd ${this.#mode}: ${this.#mode === 'decompress' ? 'corrupt input (not zstd, or damaged)' : 'the encoder failed'}`)
        }
      }
    } catch (err) {
      callback(this.#failure(err))
      return
    }
    callback()
  }

  override _flush(callback: TransformCallback): void {
    try {
      const problem = this.#frames?.endProblem()
      if (problem) throw new CompressionError(`zstd decompress: ${problem}`)
      if (!this.#call((b) => b.end(this.#onOutput))) throw new CompressionError(`zstd ${this.#mode}: the stream did not end cleanly`)
    } catch (err) {
      callback(this.#failure(err))
      return
    }
    callback()
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // A reader may destroy us from a 'data' handler while the binding is mid-call: free it after.
    if (!this.#inBinding) this.#release()
    callback(err)
  }

  #call(fn: (binding: EmbindStream) => boolean): boolean {
    this.#inBinding = true
    try {
      return fn(this.#binding)
    } finally {
      this.#inBinding = false
      if (this.destroyed) this.#release()
    }
  }

  #release(): void {
    const instance = this.#instance
    if (!instance) return
    this.#instance = undefined
    try {
      this.#binding.delete() // frees the zstd context inside the WASM heap
    } catch {
      instance.dead = true
    }
    releaseInstance(instance)
  }

  #failure(err: unknown): SnapshotError {
    if (!(err instanceof Error) && this.#instance) this.#instance.dead = true // a thrown string is an emscripten abort
    return toCompressionError(err, this.#mode)
  }
}
