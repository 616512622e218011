import assert from 'node:assert/strict'
import { test } from 'node:test'
import { pathOrder, pathOrderByDirectory, type ScanOrderList } from '../src/master/path-order.js'
import { Rng } from '../scripts/corpus.js'

/**
 * A full archive takes entries in path order (JS string order of byte strings), made from a list
 * in scan order (preorder, siblings in readdir order) one directory at a time. Whatever the tree,
 * the result must be exactly the paths sorted whole.
 */

interface Node {
  readonly name: string
  readonly children: Node[] | null // null: not a directory
}

function listOf(entries: { path: string; dir: boolean }[]): ScanOrderList & { paths: string[] } {
  return { length: entries.length, paths: entries.map((e) => e.path), path: (n) => entries[n]!.path, isDir: (n) => entries[n]!.dir }
}

/** Preorder with each directory's children in a shuffled (readdir-like) order. */
function preorder(nodes: Node[], prefix: string, rng: Rng, out: { path: string; dir: boolean }[] = []): { path: string; dir: boolean }[] {
  const shuffled = [...nodes]
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(rng.float() * (i + 1))
    ;[shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!]
  }
  for (const node of shuffled) {
    const path = prefix + node.name
    out.push({ path, dir: node.children !== null })
    if (node.children) preorder(node.children, `${path}/`, rng, out)
  }
  return out
}

/** Names that sort between a directory and its own entries ('.' and '-' and ' ' sort before '/'), bytes above 0x7f, prefixes of each other. */
const NAMES = ['a', 'a.b', 'a-b', 'a b', 'a0', 'ab', 'b', 'A', 'x\u00e9', '\u00ff', '!', '0', 'a.', 'zz', 'a\u0001']

function randomTree(rng: Rng, depth: number): Node[] {
  const nodes: Node[] = []
  for (const name of NAMES) {
    if (rng.float() < 0.5) continue
    const isDir = depth > 0 && rng.float() < 0.4
    nodes.push({ name, children: isDir ? randomTree(rng, depth - 1) : null })
  }
  return nodes
}

test('pathOrder: every tree, siblings in any order, comes out exactly as its paths sorted whole', () => {
  const rng = new Rng('path-order')
  for (let round = 0; round < 200; round++) {
    const list = listOf(preorder(randomTree(rng, 4), '', rng))
    const order = pathOrderByDirectory(list)
    assert.ok(order, `round ${round}: a preorder list is ordered a directory at a time`)
    assert.deepEqual([...order].map((n) => list.paths[n]), [...list.paths].sort(), `round ${round}`)
    assert.deepEqual(pathOrder(list), order)
  }
})

test('pathOrder: a directory and its entries with a sibling between them; empty directories; an empty list', () => {
  const list = listOf([
    { path: 'a', dir: true },
    { path: 'a/x', dir: false },
    { path: 'a/d', dir: true },
    { path: 'a.b', dir: false },
    { path: 'e', dir: true },
    { path: 'a-b', dir: true },
    { path: 'a-b/z', dir: false },
  ])
  assert.deepEqual([...pathOrder(list)].map((n) => list.paths[n]), ['a', 'a-b', 'a-b/z', 'a.b', 'a/d', 'a/x', 'e'])
  assert.deepEqual([...pathOrder(listOf([]))], [])
})

test('pathOrder: a list that is not in preorder is still sorted (whole)', () => {
  const entries = [
    { path: 'a/x', dir: false }, // before its directory
    { path: 'a', dir: true },
    { path: 'b', dir: true },
    { path: 'b/1', dir: false },
    { path: 'c', dir: false },
    { path: 'b/0', dir: false }, // its directory's subtree interrupted
  ]
  const list = listOf(entries)
  assert.equal(pathOrderByDirectory(list), null)
  assert.equal(pathOrderByDirectory(listOf(entries.slice(1))), null, 'a subtree interrupted')
  assert.deepEqual([...pathOrder(list)].map((n) => list.paths[n]), [...list.paths].sort())
  const rng = new Rng('path-order-shuffled')
  for (let round = 0; round < 50; round++) {
    const shuffled = preorder(randomTree(rng, 3), '', rng).sort(() => rng.float() - 0.5)
    const l = listOf(shuffled)
    assert.deepEqual([...pathOrder(l)].map((n) => l.paths[n]), [...l.paths].sort(), `round ${round}`)
  }
})
