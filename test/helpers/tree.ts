import { spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export { describeTree, treeDiff } from '../../scripts/tree-compare.js'

/**
 * A copy of a tree as the comparisons see it: names as bytes, links verbatim, modes and mtimes to
 * the nanosecond, directories' included (`cp -a`; Node's cpSync keeps file times to the
 * millisecond only, and not directories').
 */
export function copyTree(from: string, to: string): void {
  const r = spawnSync('cp', ['-a', '--', from, to], { timeout: 120_000 })
  if (r.status !== 0) throw new Error(`cp -a ${from} ${to}: ${r.stderr?.toString() ?? r.error?.message}`)
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
