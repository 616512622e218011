/**
 * The order a full archive takes entries in (byte order of their paths: paths are byte strings,
 * so JS string order) for entries listed in scan order, without holding every path at once.
 *
 * Sorting the whole tree's paths held them all as strings: ~60 MB at 1M entries, on top of the
 * index, at the peak of a full build (BENCHMARKS.md, "Full builds in path order, a directory at a
 * time"). But a scan is preorder (find's order and the walk's): a directory's entries follow it,
 * each subdirectory's subtree contiguous after the subdirectory. So the order is made one
 * directory at a time: its children sorted by name, and each subdirectory's subtree placed where
 * `name/` sorts among them (`a` < `a.b` < `a/x`: a sibling can sort between a directory and its
 * own entries). Held: the order and each directory's subtree end (4 bytes an entry each), and the
 * names of the siblings being sorted, along the current path. A list not in preorder (our scans
 * never make one) is sorted whole, as before.
 */
export interface ScanOrderList {
  readonly length: number
  path(n: number): string
  isDir(n: number): boolean
}

export function pathOrder(list: ScanOrderList): Uint32Array {
  return pathOrderByDirectory(list) ?? sortedWhole(list)
}

/** The order made a directory at a time, or null for a list that is not in preorder. */
export function pathOrderByDirectory(list: ScanOrderList): Uint32Array | null {
  const ends = subtreeEnds(list)
  const order = new Uint32Array(list.length)
  let out = 0

  /** Places the entries `from` to `to` (exclusive), children of a directory whose paths start `prefixLength` bytes in. */
  const place = (from: number, to: number, prefixLength: number): boolean => {
    const keys: string[] = []
    const items: number[] = [] // an entry's number, or -(n + 1) for the subtree below directory n
    for (let i = from; i < to; ) {
      const name = list.path(i).slice(prefixLength)
      if (name.includes('/')) return false // not a child of this directory here: not preorder
      keys.push(name)
      items.push(i)
      if (!list.isDir(i)) {
        i++
        continue
      }
      if (ends[i]! > i + 1) {
        keys.push(`${name}/`)
        items.push(-(i + 1))
      }
      i = ends[i]!
    }
    const byName = Array.from(keys.keys()).sort((a, b) => (keys[a]! < keys[b]! ? -1 : 1)) // names are unique
    for (const j of byName) {
      const item = items[j]!
      if (item >= 0) order[out++] = item
      else if (!place(-item, ends[-item - 1]!, list.path(-item - 1).length + 1)) return false
    }
    return true
  }

  return place(0, list.length, 0) && out === list.length ? order : null
}

/** For each directory, the entry after its subtree (the entries whose paths start with its path and '/'). */
function subtreeEnds(list: ScanOrderList): Int32Array {
  const ends = new Int32Array(list.length)
  const open: { row: number; prefix: string }[] = []
  for (let i = 0; i < list.length; i++) {
    const path = list.path(i)
    while (open.length > 0 && !path.startsWith(open[open.length - 1]!.prefix)) ends[open.pop()!.row] = i
    if (list.isDir(i)) open.push({ row: i, prefix: `${path}/` })
  }
  for (const { row } of open) ends[row] = list.length
  return ends
}

/** Every path held and sorted at once: for a list that is not in preorder. */
function sortedWhole(list: ScanOrderList): Uint32Array {
  const paths: string[] = []
  for (let n = 0; n < list.length; n++) paths.push(list.path(n))
  const order = Uint32Array.from(paths.keys())
  return order.sort((a, b) => (paths[a]! < paths[b]! ? -1 : 1)) // paths are unique: never equal
}
