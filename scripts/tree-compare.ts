import { createHash } from 'node:crypto'
import { lstatSync, readdirSync, readFileSync, readlinkSync, statSync, type BigIntStats } from 'node:fs'

/**
 * Everything a replica must reproduce, by path: type, permission bits, bytes or link target, and
 * the mtime (to the microsecond: what Node can set, src/core/mtime.ts), the root's own mode and
 * mtime included (as '.'). Names are read and compared as bytes; a key is the path's bytes in
 * 'latin1' (src/core/byte-path.ts). Used by the demo, the benchmark and the tests to say "the
 * replica equals the master".
 */
export interface DescribeOptions {
  /** Compare mtimes (default true); off for copies made by tools that keep only seconds. */
  readonly mtimes?: boolean
}

export function describeTree(root: string, opts: DescribeOptions = {}): Map<string, string> {
  const withTimes = opts.mtimes ?? true
  const rootBytes = Buffer.from(root)
  const abs = (rel: string): Buffer => (rel ? Buffer.concat([rootBytes, Buffer.from('/' + rel, 'latin1')]) : rootBytes)
  const time = (st: BigIntStats): string => (withTimes ? ` @${st.mtimeNs / 1000n}` : '')
  const out = new Map<string, string>()
  const rootStat = statSync(rootBytes, { bigint: true }) // through the live symlink, as a reader sees it
  out.set('.', `root ${(rootStat.mode & 0o7777n).toString(8)}${time(rootStat)}`)
  const walk = (rel: string): void => {
    for (const name of readdirSync(abs(rel), { encoding: 'buffer' })) {
      const path = rel ? `${rel}/${name.toString('latin1')}` : name.toString('latin1')
      const st = lstatSync(abs(path), { bigint: true })
      const mode = (st.mode & 0o7777n).toString(8)
      if (st.isSymbolicLink()) out.set(path, `l ${readlinkSync(abs(path), { encoding: 'buffer' }).toString('latin1')}${time(st)}`)
      else if (st.isDirectory()) {
        out.set(path, `d ${mode}${time(st)}`)
        walk(path)
      } else if (st.isFile()) out.set(path, `f ${mode} ${createHash('sha256').update(readFileSync(abs(path))).digest('hex')}${time(st)}`)
      else out.set(path, 'other')
    }
  }
  walk('')
  return out
}

/** Differences between two trees, as readable lines (empty when equal); names escaped as JSON. */
export function treeDiff(master: string, replica: string, opts: DescribeOptions = {}): string[] {
  const a = describeTree(master, opts)
  const b = describeTree(replica, opts)
  const show = (p: string): string => JSON.stringify(Buffer.from(p, 'latin1').toString('utf8') === p ? p : `${p} (bytes ${Buffer.from(p, 'latin1').toString('hex')})`)
  const lines: string[] = []
  for (const [p, v] of a) if (b.get(p) !== v) lines.push(`${show(p)}: master ${v}, replica ${b.get(p) ?? 'missing'}`)
  for (const [p, v] of b) if (!a.has(p)) lines.push(`${show(p)}: only on the replica (${v})`)
  return lines
}
