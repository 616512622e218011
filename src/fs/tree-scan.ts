import { spawn, spawnSync } from 'node:child_process'
import { lstatSync, readdirSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { SnapshotError } from '../core/errors.js'
import { CARRIED_MODE_BITS } from '../core/tree-entry.js'
import { crashPoint } from './crash-points.js'

/**
 * Metadata of every entry below a root, without reading any file. GNU find does this ~7x faster
 * than Node's lstat per file (../shared/NOTES.md), so it is used when present; a portable walk in
 * Node is the fallback. Both produce the same records, so an index written by one is read by the
 * other.
 */
export interface ScanRecord {
  /** f, d, l, or s for anything else (socket, fifo, device): skipped by the caller with a warning. */
  readonly type: 'f' | 'd' | 'l' | 's'
  readonly path: string // relative, '/'-separated
  readonly mode: number // permission bits
  readonly size: number
  /** Everything that changes when the file does: mode, size, mtime, ctime, inode (ns times). */
  readonly statSig: string
  /** Decimal nanoseconds since the epoch: strings, so a million records need no BigInt parsing. */
  readonly mtimeNs: string
  readonly ctimeNs: string
  readonly target: string // symlink target, '' otherwise
}

const FIND_FORMAT = '%y\\0%m\\0%s\\0%T@\\0%C@\\0%i\\0%l\\0%P\\0'
const FIELDS = 8

let gnuFind: boolean | undefined
export function hasGnuFind(): boolean {
  if (gnuFind === undefined) {
    const r = spawnSync('find', ['--version'], { encoding: 'utf8' })
    gnuFind = r.status === 0 && r.stdout.includes('GNU findutils')
  }
  return gnuFind
}

export function statSigOf(type: string, mode: number, size: number, mtimeNs: bigint | string, ctimeNs: bigint | string, ino: string): string {
  return `${type}${mode.toString(8)} ${size} ${mtimeNs} ${ctimeNs} ${ino}`
}

/** Streams scan records to `onRecord`; resolves when the whole tree was seen. */
export async function scanTree(root: string, onRecord: (r: ScanRecord) => void): Promise<void> {
  if (process.env.SNAPSHOT_SCAN !== 'node' && hasGnuFind()) return scanWithFind(root, onRecord)
  scanWithNode(root, '', onRecord)
}

/** GNU find prints "1795257700.6313518810": seconds and ten fractional digits; we keep ns. */
function findTimeToNs(s: string): string {
  const dot = s.indexOf('.')
  if (dot < 0) return s === '0' ? '0' : s + '000000000'
  const ns = s.slice(0, dot) + (s.slice(dot + 1) + '000000000').slice(0, 9)
  let i = 0
  while (i < ns.length - 1 && ns.charCodeAt(i) === 48) i++ // no leading zeros: the same digits as BigInt's
  return i ? ns.slice(i) : ns
}

function scanWithFind(root: string, onRecord: (r: ScanRecord) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('find', ['.', '-mindepth', '1', '-printf', FIND_FORMAT], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    let pending: Buffer = Buffer.alloc(0)
    const fields: Buffer[] = []
    let failure: unknown
    let records = 0
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString()
    })
    child.stdout.on('data', (chunk: Buffer) => {
      if (failure) return
      const buf = pending.length ? Buffer.concat([pending, chunk]) : chunk
      let start = 0
      for (;;) {
        const nul = buf.indexOf(0, start)
        if (nul < 0) break
        fields.push(buf.subarray(start, nul))
        start = nul + 1
        if (fields.length === FIELDS) {
          try {
            onRecord(recordFromFind(fields))
            if (++records % 1000 === 0) crashPoint('scan:records')
          } catch (err) {
            failure = err
            child.kill()
            return
          }
          fields.length = 0
        }
      }
      // Keep the unfinished field, and copy finished ones out of the buffer we are about to drop.
      for (let i = 0; i < fields.length; i++) fields[i] = Buffer.from(fields[i]!)
      pending = Buffer.from(buf.subarray(start))
    })
    child.on('error', (err) => reject(new SnapshotError(`cannot run find: ${err.message}`, { cause: err })))
    child.on('close', (code) => {
      if (failure) return reject(failure)
      if (code !== 0) return reject(new SnapshotError(`scanning ${root} failed: ${stderr.trim() || `find exited ${code}`}`))
      if (pending.length || fields.length) return reject(new SnapshotError(`scanning ${root}: truncated find output`))
      resolve()
    })
  })
}

function recordFromFind(f: Buffer[]): ScanRecord {
  const y = f[0]!.toString('latin1')
  const type = y === 'f' || y === 'd' || y === 'l' ? y : 's'
  const mode = parseInt(f[1]!.toString('latin1'), 8) & CARRIED_MODE_BITS
  const size = Number(f[2]!.toString('latin1'))
  const mtimeNs = findTimeToNs(f[3]!.toString('latin1'))
  const ctimeNs = findTimeToNs(f[4]!.toString('latin1'))
  const ino = f[5]!.toString('latin1')
  const path = f[7]!.toString('utf8')
  return { type, path, mode, size, mtimeNs, ctimeNs, statSig: statSigOf(type, mode, size, mtimeNs, ctimeNs, ino), target: type === 'l' ? f[6]!.toString('utf8') : '' }
}

function scanWithNode(root: string, rel: string, onRecord: (r: ScanRecord) => void): void {
  const dir = rel ? join(root, rel) : root
  for (const name of readdirSync(dir)) {
    const path = rel ? `${rel}/${name}` : name
    const st = lstatSync(join(root, path), { bigint: true })
    const type = st.isFile() ? 'f' : st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 's'
    const mode = Number(st.mode) & CARRIED_MODE_BITS
    const size = Number(st.size)
    const target = type === 'l' ? readlinkSync(join(root, path)) : ''
    onRecord({ type, path, mode, size, mtimeNs: st.mtimeNs.toString(), ctimeNs: st.ctimeNs.toString(), statSig: statSigOf(type, mode, size, st.mtimeNs, st.ctimeNs, st.ino.toString()), target })
    if (type === 'd') scanWithNode(root, path, onRecord)
  }
}
