/**
 * A synthetic playlist corpus for benchmarks and tests: a deterministic tree of m3u-like files of
 * 100-300 bytes in directories of ~100 entries (`artist/album-123/playlist-00042.m3u`, with a genre
 * level above 1.5M files), and "one hour of change" applied to such a tree (10% of the files
 * modified, 0.5% deleted, 0.5% added).
 *
 *   node dist/scripts/corpus.js --files N --out DIR [--seed S] [--workers W]
 *   node dist/scripts/corpus.js --mutate --out DIR [--seed S]
 *
 * Both print a one-line JSON summary. The same seed gives the same bytes at the same paths; a
 * mutation depends on the seed and on the list of paths it finds, so successive hours with one seed
 * still touch different files.
 *
 * Speed: a million files are a million create+write+close system calls, so everything here is
 * synchronous (no promise per file), each directory is made once, and generation is split by album
 * across worker threads (the kernel's ext4 work is most of the cost and runs on both cores).
 * Every album draws from its own seeded generator, so the split does not change a byte.
 */
import { createHash } from 'node:crypto'
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
  type Dirent,
} from 'node:fs'
import { availableParallelism } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { ExitCode, SnapshotError, UsageError } from '../src/core/errors.js'
import { isRunAsMain } from './run-as-main.js'

export const MIN_FILE_BYTES = 100
export const MAX_FILE_BYTES = 300

/** What a run did. For a mutation `files` and `dirs` count the tree afterwards. */
export interface CorpusSummary {
  files: number
  dirs: number
  /** Bytes written by this run: the whole corpus for a generation, the new contents for a mutation. */
  bytes: number
  modified: number
  deleted: number
  added: number
  seconds: number
}

export interface GenerateOptions {
  files: number
  out: string
  seed?: string | number
  /** Worker threads that write albums; default: the number of CPUs, at most 2 (more contend in the kernel). 1 writes in-thread. */
  workers?: number
}

export interface MutateOptions {
  out: string
  seed?: string | number
  modifyFraction?: number
  deleteFraction?: number
  addFraction?: number
  /** Of the modified files, the share rewritten at their old size (content differs, size not). */
  sameSizeFraction?: number
  /** Of the modified files, the share replaced by write-to-temp + rename (a new inode). */
  renameFraction?: number
}

// ---------------------------------------------------------------------------------------------
// Pure part: a seeded generator, names, contents, the layout plan.

/** sfc32, seeded from SHA-256 of a string: fast, 128 bits of state, same sequence everywhere. */
export class Rng {
  private a: number
  private b: number
  private c: number
  private d: number

  constructor(seed: string) {
    const h = createHash('sha256').update(seed).digest()
    this.a = h.readUInt32LE(0)
    this.b = h.readUInt32LE(4)
    this.c = h.readUInt32LE(8)
    this.d = h.readUInt32LE(12)
    for (let i = 0; i < 12; i++) this.next()
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** In [0, 1). */
  float(): number {
    return this.next() / 4294967296
  }

  /** A uniform integer in [lo, hi], both included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1))
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.float() * items.length)]!
  }
}

const ADJECTIVES = [
  'velvet', 'silent', 'electric', 'golden', 'broken', 'crimson', 'hollow', 'neon', 'wild', 'lunar',
  'paper', 'iron', 'gentle', 'frozen', 'burning', 'lost', 'midnight', 'northern', 'quiet', 'rapid',
  'scarlet', 'secret', 'solar', 'stone', 'summer', 'tender', 'urban', 'violet', 'wandering', 'young',
  'amber', 'bitter', 'blue', 'cosmic', 'dusty', 'early', 'faded', 'glass', 'heavy', 'indigo',
]
const NOUNS = [
  'harbor', 'river', 'machine', 'garden', 'echo', 'lights', 'wolves', 'sparrow', 'engine', 'tide',
  'canyon', 'mirror', 'signal', 'orchard', 'ghosts', 'parade', 'satellite', 'horizon', 'theory', 'union',
  'avenue', 'brothers', 'circus', 'delta', 'empire', 'fever', 'geometry', 'hearts', 'island', 'kingdom',
  'lanterns', 'mountain', 'nation', 'ocean', 'pilots', 'radio', 'season', 'thunder', 'valley', 'winter',
]
const GENRES = [
  'ambient', 'blues', 'classical', 'country', 'disco', 'electronic', 'folk', 'funk', 'hip-hop', 'house',
  'indie', 'jazz', 'latin', 'metal', 'pop', 'punk', 'reggae', 'rock', 'soul', 'techno',
]

function titleCase(slug: string): string {
  return slug
    .split('-')
    .map((w) => (w.length > 0 ? w[0]!.toUpperCase() + w.slice(1) : w))
    .join(' ')
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0')
}

/**
 * An m3u-like playlist of exactly `size` bytes (ASCII, so bytes = characters) for
 * `size` >= MIN_FILE_BYTES: a header, whole entries while they fit, and a comment line as filler.
 */
export function playlistText(rng: Rng, artist: string, album: string, size: number): string {
  const artistTitle = titleCase(artist)
  let text = `#EXTM3U\n#PLAYLIST:${artistTitle} - ${titleCase(album)} #${rng.int(1, 999)}\n`
  for (;;) {
    const adj = rng.pick(ADJECTIVES)
    const noun = rng.pick(NOUNS)
    const track = pad(rng.int(1, 24), 2)
    const entry =
      `#EXTINF:${rng.int(90, 420)},${artistTitle} - ${titleCase(adj)} ${titleCase(noun)}\n` +
      `${artist}/${album}/${track}-${adj}-${noun}.mp3\n`
    if (text.length + entry.length > size) break
    text += entry
  }
  const gap = size - text.length
  if (gap === 1) return text.slice(0, -1) + ' \n'
  if (gap >= 2) {
    let filler = ''
    while (filler.length < gap - 2) filler += ` ${rng.pick(ADJECTIVES)} ${rng.pick(NOUNS)}`
    text += `#${filler.slice(0, gap - 2)}\n`
  }
  return text
}

/** One leaf directory of the plan, written as a unit (by one worker, from its own generator). */
export interface AlbumPlan {
  /** Relative path with '/', e.g. `velvet-harbor/album-123` or `jazz/velvet-harbor/album-123`. */
  dir: string
  artist: string
  album: string
  /** Sorted, distinct playlist numbers (the file names). */
  numbers: number[]
}

export interface CorpusPlan {
  /** Every directory, parents before children. */
  dirs: string[]
  albums: AlbumPlan[]
}

/** Sizes of groups of ~100 (70-130) that add up to `total`. */
function groupSizes(rng: Rng, total: number): number[] {
  const sizes: number[] = []
  let left = total
  while (left > 0) {
    const n = Math.min(left, rng.int(70, 130))
    sizes.push(n)
    left -= n
  }
  return sizes
}

/** `count` distinct increasing numbers with small gaps, so later additions find free names. */
function sparseNumbers(rng: Rng, count: number, start: number, maxStep: number): number[] {
  const out: number[] = []
  let n = rng.int(0, start)
  for (let i = 0; i < count; i++) {
    n += rng.int(1, maxStep)
    out.push(n)
  }
  return out
}

function uniqueArtist(rng: Rng, taken: Set<string>): string {
  let name = `${rng.pick(ADJECTIVES)}-${rng.pick(NOUNS)}`
  for (let k = 2; taken.has(name); k++) name = `${name.replace(/-\d+$/, '')}-${k}`
  taken.add(name)
  return name
}

/**
 * The layout for `files` files: albums of ~100 playlists, artists of ~100 albums and, when there
 * are more than 150 artists (~1.5M files), genres of ~100 artists. Pure and cheap (one entry per
 * directory), so the main thread plans and the workers only write.
 */
export function planCorpus(files: number, seed: string): CorpusPlan {
  const rng = new Rng(`${seed}/plan`)
  const albumSizes = groupSizes(rng, files)
  const artistSizes = groupSizes(rng, albumSizes.length)
  const genreSizes = artistSizes.length > 150 ? groupSizes(rng, artistSizes.length) : [artistSizes.length]
  const dirs: string[] = []
  const albums: AlbumPlan[] = []
  let nextAlbum = 0
  let nextArtist = 0
  genreSizes.forEach((artistsInGenre, g) => {
    const genre = genreSizes.length > 1 ? (g < GENRES.length ? GENRES[g]! : `${GENRES[g % GENRES.length]}-${Math.floor(g / GENRES.length)}`) : ''
    if (genre) dirs.push(genre)
    const takenArtists = new Set<string>()
    for (let a = 0; a < artistsInGenre; a++) {
      const artist = uniqueArtist(rng, takenArtists)
      const artistDir = genre ? `${genre}/${artist}` : artist
      dirs.push(artistDir)
      const albumsOfArtist = artistSizes[nextArtist++]!
      const albumNumbers = sparseNumbers(rng, albumsOfArtist, 40, 6)
      for (const albumNo of albumNumbers) {
        const album = `album-${pad(albumNo, 3)}`
        const dir = `${artistDir}/${album}`
        dirs.push(dir)
        albums.push({ dir, artist, album, numbers: sparseNumbers(rng, albumSizes[nextAlbum++]!, 500, 4) })
      }
    }
  })
  return { dirs, albums }
}

export function playlistName(n: number): string {
  return `playlist-${pad(n, 5)}.m3u`
}

// ---------------------------------------------------------------------------------------------
// Disk part.

/** Writes the files of the given albums (their directories must exist). Returns the bytes written. */
function writeAlbums(root: string, seed: string, albums: readonly AlbumPlan[]): number {
  let bytes = 0
  for (const album of albums) {
    const rng = new Rng(`${seed}/album/${album.dir}`)
    const dir = join(root, album.dir)
    for (const n of album.numbers) {
      const text = playlistText(rng, album.artist, album.album, rng.int(MIN_FILE_BYTES, MAX_FILE_BYTES))
      writeFileSync(join(dir, playlistName(n)), text, { flag: 'wx' }) // wx: never silently reuse a stale tree
      bytes += text.length
    }
  }
  return bytes
}

interface WriterJob {
  kind: 'corpus-writer'
  root: string
  seed: string
  albums: AlbumPlan[]
}

function runWriter(job: WriterJob): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: job })
    let bytes: number | undefined
    worker.once('message', (m: number) => {
      bytes = m
    })
    worker.once('error', reject)
    worker.once('exit', (code) => {
      if (code === 0 && bytes !== undefined) resolvePromise(bytes)
      else reject(new SnapshotError(`corpus writer thread exited with code ${code}`))
    })
  })
}

function isEmptyOrMissing(dir: string): boolean {
  try {
    return readdirSync(dir).length === 0
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true
    throw err
  }
}

/** Creates a new corpus in `out`, which must be missing or empty. */
export async function generateCorpus(opts: GenerateOptions): Promise<CorpusSummary> {
  const started = process.hrtime.bigint()
  if (!Number.isSafeInteger(opts.files) || opts.files < 1) throw new UsageError(`--files must be a positive integer, got ${opts.files}`)
  const root = resolve(opts.out)
  if (!isEmptyOrMissing(root)) throw new UsageError(`${root} is not empty: remove it or choose another --out`)
  const seed = String(opts.seed ?? 1)
  const plan = planCorpus(opts.files, seed)
  mkdirSync(root, { recursive: true })
  for (const dir of plan.dirs) mkdirSync(join(root, dir))

  // Worker threads only pay off with enough files per thread; running from .ts sources (tsx) the
  // worker could not load this file, so write in-thread there.
  const fromSources = import.meta.url.endsWith('.ts')
  const wanted = opts.workers ?? Math.min(2, availableParallelism())
  const workers = fromSources || opts.files < 20_000 ? 1 : Math.max(1, Math.min(wanted, plan.albums.length))
  let bytes = 0
  if (workers === 1) {
    bytes = writeAlbums(root, seed, plan.albums)
  } else {
    const per = Math.ceil(plan.albums.length / workers)
    const jobs: Promise<number>[] = []
    for (let i = 0; i < workers; i++) {
      jobs.push(runWriter({ kind: 'corpus-writer', root, seed, albums: plan.albums.slice(i * per, (i + 1) * per) }))
    }
    for (const b of await Promise.all(jobs)) bytes += b
  }
  return {
    files: opts.files,
    dirs: plan.dirs.length,
    bytes,
    modified: 0,
    deleted: 0,
    added: 0,
    seconds: secondsSince(started),
  }
}

/** Every file and directory under a root, in sorted order (entries of a directory by name, depth first). */
export interface TreeListing {
  /** Relative paths with '/'. */
  files: string[]
  dirs: string[]
}

export function listTree(root: string): TreeListing {
  const files: string[] = []
  const dirs: string[] = []
  const walk = (rel: string): void => {
    const entries: Dirent[] = readdirSync(rel ? join(root, rel) : root, { withFileTypes: true })
    entries.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))
    for (const e of entries) {
      const path = rel ? `${rel}/${e.name}` : e.name
      if (e.isDirectory()) {
        dirs.push(path)
        walk(path)
      } else if (e.isFile()) {
        files.push(path)
      }
    }
  }
  walk('')
  return { files, dirs }
}

function splitPath(path: string): { dir: string; name: string } {
  const slash = path.lastIndexOf('/')
  return slash < 0 ? { dir: '', name: path } : { dir: path.slice(0, slash), name: path.slice(slash + 1) }
}

/** The artist and album a playlist belongs to, read from its directory path. */
function albumOf(dir: string): { artist: string; album: string } {
  const parts = dir.split('/')
  return { artist: parts.at(-2) ?? 'unknown-artist', album: parts.at(-1) ?? 'album-000' }
}

/**
 * Applies one hour of change to the corpus in `out`: distinct sets of files are modified (most in
 * place, keeping the inode; some by temp file + rename; some at their old size) and deleted, and new
 * playlists are added, mostly to existing albums and a tenth to new album directories.
 */
export async function mutateCorpus(opts: MutateOptions): Promise<CorpusSummary> {
  const started = process.hrtime.bigint()
  const root = resolve(opts.out)
  const listing = listTree(root)
  const files = listing.files
  if (files.length === 0) throw new UsageError(`${root} holds no files to mutate: generate a corpus first`)

  // The seed and the list of paths choose the changes: deterministic, yet a different hour each run.
  const h = createHash('sha256').update(`${opts.seed ?? 1}\n`)
  for (const f of files) h.update(f + '\n')
  const rng = new Rng(h.digest('hex'))

  const n = files.length
  const nModify = Math.round(n * (opts.modifyFraction ?? 0.1))
  const nDelete = Math.round(n * (opts.deleteFraction ?? 0.005))
  const nAdd = Math.round(n * (opts.addFraction ?? 0.005))
  if (nModify + nDelete > n) throw new UsageError('the fractions to modify and delete add up to more than every file')
  const sameSize = opts.sameSizeFraction ?? 0.3
  const viaRename = opts.renameFraction ?? 0.2

  // Partial Fisher-Yates: the first nModify + nDelete slots become a uniform sample without repeats.
  const order = new Uint32Array(n)
  for (let i = 0; i < n; i++) order[i] = i
  for (let i = 0; i < nModify + nDelete; i++) {
    const j = i + Math.floor(rng.float() * (n - i))
    const t = order[i]!
    order[i] = order[j]!
    order[j] = t
  }
  const toModify = Array.from(order.subarray(0, nModify)).sort((x, y) => x - y) // disk order
  const toDelete = Array.from(order.subarray(nModify, nModify + nDelete)).sort((x, y) => x - y)

  // Names taken per directory, at the start and by additions: an addition is never a re-creation.
  const namesIn = new Map<string, Set<string>>()
  const albumDirs: string[] = []
  for (const f of files) {
    const { dir, name } = splitPath(f)
    let names = namesIn.get(dir)
    if (!names) {
      names = new Set()
      namesIn.set(dir, names)
      albumDirs.push(dir)
    }
    names.add(name)
  }

  let bytes = 0
  for (const i of toDelete) unlinkSync(join(root, files[i]!))

  for (const i of toModify) {
    const path = join(root, files[i]!)
    const oldSize = statSync(path).size
    const keep = rng.float() < sameSize && oldSize >= MIN_FILE_BYTES && oldSize <= MAX_FILE_BYTES
    const size = keep ? oldSize : rng.int(MIN_FILE_BYTES, MAX_FILE_BYTES)
    const { artist, album } = albumOf(splitPath(files[i]!).dir)
    let text = playlistText(rng, artist, album, size)
    // Only a same-size rewrite can repeat the old bytes: read those alone (reads of a cold tree
    // are what a mutation waits on).
    if (size === oldSize) {
      const old = readFileSync(path, 'latin1')
      while (text === old) text = playlistText(rng, artist, album, size)
    }
    if (rng.float() < viaRename) {
      const tmp = `${path}.mutate.tmp`
      writeFileSync(tmp, text)
      renameSync(tmp, path)
    } else {
      writeFileSync(path, text)
    }
    bytes += text.length
  }

  // A tenth of the additions go to new albums of ~50, under artists that already exist.
  const toNewAlbums = nAdd >= 10 ? Math.round(nAdd / 10) : 0
  const newAlbums: string[] = []
  const albumCount = toNewAlbums > 0 ? Math.max(1, Math.round(toNewAlbums / 50)) : 0
  for (let k = 0; k < albumCount; k++) {
    const artistDir = splitPath(rng.pick(albumDirs)).dir
    const siblings = new Set(listing.dirs.filter((d) => splitPath(d).dir === artistDir).map((d) => splitPath(d).name))
    for (const d of newAlbums) if (splitPath(d).dir === artistDir) siblings.add(splitPath(d).name)
    let name = `album-${pad(rng.int(0, 999), 3)}`
    for (let tries = 0; siblings.has(name); tries++) {
      name = tries < 1000 ? `album-${pad(rng.int(0, 999), 3)}` : `album-${pad(rng.int(1000, 99999), 5)}`
    }
    const dir = artistDir ? `${artistDir}/${name}` : name
    mkdirSync(join(root, dir))
    namesIn.set(dir, new Set())
    newAlbums.push(dir)
  }
  for (let k = 0; k < nAdd; k++) {
    const dir = k < toNewAlbums && newAlbums.length > 0 ? newAlbums[k % newAlbums.length]! : rng.pick(albumDirs)
    const names = namesIn.get(dir)!
    let name = playlistName(rng.int(0, 99999))
    while (names.has(name)) name = playlistName(rng.int(0, 99999))
    names.add(name)
    const { artist, album } = albumOf(dir)
    const text = playlistText(rng, artist, album, rng.int(MIN_FILE_BYTES, MAX_FILE_BYTES))
    writeFileSync(join(root, dir, name), text, { flag: 'wx' })
    bytes += text.length
  }

  return {
    files: n - nDelete + nAdd,
    dirs: listing.dirs.length + newAlbums.length,
    bytes,
    modified: nModify,
    deleted: nDelete,
    added: nAdd,
    seconds: secondsSince(started),
  }
}

function secondsSince(start: bigint): number {
  return Math.round(Number(process.hrtime.bigint() - start) / 1e6) / 1e3
}

// ---------------------------------------------------------------------------------------------
// Entry points: the writer thread, and the CLI.

if (!isMainThread && (workerData as WriterJob | undefined)?.kind === 'corpus-writer') {
  const job = workerData as WriterJob
  parentPort!.postMessage(writeAlbums(job.root, job.seed, job.albums))
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      files: { type: 'string' },
      out: { type: 'string' },
      seed: { type: 'string' },
      workers: { type: 'string' },
      mutate: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(
      'usage: corpus --files N --out DIR [--seed S] [--workers W]\n' +
        '       corpus --mutate --out DIR [--seed S]\n',
    )
    return
  }
  if (!values.out) throw new UsageError('--out DIR is required')
  let summary: CorpusSummary
  if (values.mutate) {
    if (values.files !== undefined) throw new UsageError('--mutate takes no --files')
    summary = await mutateCorpus({ out: values.out, seed: values.seed })
  } else {
    if (values.files === undefined) throw new UsageError('--files N is required (or --mutate)')
    const files = Number(values.files)
    const workers = values.workers === undefined ? undefined : Number(values.workers)
    if (workers !== undefined && (!Number.isSafeInteger(workers) || workers < 1)) {
      throw new UsageError(`--workers must be a positive integer, got ${values.workers}`)
    }
    summary = await generateCorpus({ files, out: values.out, seed: values.seed, workers })
  }
  process.stdout.write(JSON.stringify(summary) + '\n')
}

if (isMainThread && isRunAsMain(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    const code = err instanceof SnapshotError ? err.exitCode : (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? ExitCode.Usage : ExitCode.Failure
    process.stderr.write(`corpus: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = code
  })
}
