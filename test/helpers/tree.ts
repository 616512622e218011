import { createHash } from 'node:crypto'
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** Everything a replica must reproduce, by path: type, permission bits, and bytes or link target. */
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
      else out.set(path, `other`)
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

export function writeTree(root: string, files: Record<string, string | { content: string; mode: number } | { link: string } | { dir: true; mode?: number }>): void {
  for (const [path, spec] of Object.entries(files)) {
    const abs = join(root, path)
    mkdirSync(join(abs, '..'), { recursive: true })
    if (typeof spec === 'string') writeFileSync(abs, spec)
    else if ('link' in spec) symlinkSync(spec.link, abs)
    else if ('dir' in spec) {
      mkdirSync(abs, { recursive: true })
      if (spec.mode !== undefined) chmodSync(abs, spec.mode)
    } else {
      writeFileSync(abs, spec.content)
      chmodSync(abs, spec.mode)
    }
  }
}

/** The awkward cases the issue names: odd names, deep nesting, empty dirs, links, modes. */
export function awkwardTree(root: string): void {
  const deep = Array.from({ length: 42 }, (_, i) => `d${i}`).join('/')
  writeTree(root, {
    'plain.m3u': '#EXTM3U\n#EXTINF:123,Artist - Title\nhttp://example.invalid/a.mp3\n',
    'with space/and "quotes".m3u': 'quoted\n',
    "it's/o'clock.m3u": 'apostrophe\n',
    'new\nline.m3u': 'a newline in the name\n',
    'tab\there.m3u': 'a tab\n',
    'café-nfc.m3u': 'nfc\n',
    'cafe\u0301-nfd.m3u': 'nfd\n',
    '日本語/プレイリスト.m3u': 'unicode\n',
    ['x'.repeat(255)]: 'a 255-byte name\n',
    [`long/${'y'.repeat(200)}/${'z'.repeat(200)}.m3u`]: 'a long path\n',
    [`${deep}/bottom.m3u`]: 'deep\n',
    'empty-dir': { dir: true },
    'private-dir': { dir: true, mode: 0o700 },
    'exec.sh': { content: '#!/bin/sh\necho hi\n', mode: 0o755 },
    'readonly.m3u': { content: 'read only\n', mode: 0o444 },
    'empty-file.m3u': '',
    'links/to-plain': { link: '../plain.m3u' },
    'links/dangling': { link: 'nowhere/at/all' },
    'links/to-dir': { link: '../with space' },
    'big.bin': 'B'.repeat(3 * 1024 * 1024 + 17),
  })
}
