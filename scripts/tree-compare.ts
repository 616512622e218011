import { createHash } from 'node:crypto'
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'

/**
 * Everything a replica must reproduce, by path: type, permission bits, and bytes or link target.
 * Used by the demo, the benchmark and the tests to say "the replica equals the master".
 */
export function describeTree(root: string): Map<string, string> {
  const out = new Map<string, string>()
  const walk = (rel: string): void => {
    for (const name of readdirSync(rel ? join(root, rel) : root)) {
      const path = rel ? `${rel}/${name}` : name
      const abs = join(root, path)
      const st = lstatSync(abs)
      const mode = (st.mode & 0o7777).toString(8)
      if (st.isSymbolicLink()) out.set(path, `l ${readlinkSync(abs)}`)
      else if (st.isDirectory()) {
        out.set(path, `d ${mode}`)
        walk(path)
      } else if (st.isFile()) out.set(path, `f ${mode} ${createHash('sha256').update(readFileSync(abs)).digest('hex')}`)
      else out.set(path, 'other')
    }
  }
  walk('')
  return out
}

/** Differences between two trees, as readable lines (empty when equal). */
export function treeDiff(master: string, replica: string): string[] {
  const a = describeTree(master)
  const b = describeTree(replica)
  const lines: string[] = []
  for (const [p, v] of a) if (b.get(p) !== v) lines.push(`${JSON.stringify(p)}: master ${v}, replica ${b.get(p) ?? 'missing'}`)
  for (const [p, v] of b) if (!a.has(p)) lines.push(`${JSON.stringify(p)}: only on the replica (${v})`)
  return lines
}
