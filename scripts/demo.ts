/**
 * `npm run demo`: the whole loop on an embedded sample, for real. Generates a playlist tree,
 * starts `snapshot serve` on 127.0.0.1, builds, pulls into three replicas with --swap, changes the
 * tree (edits, deletions, additions), builds a delta, pulls again, and checks every replica equals
 * the master exactly: names as bytes, contents, modes, link targets and mtimes (tree-compare.ts).
 * The sample holds names real trees grow (a backslash, a newline, bytes that are not UTF-8, two
 * Unicode spellings of one word) and links that point anywhere. Everything happens under ./.demo
 * (removed at the start of each run).
 *
 *   npm run demo -- [--files N] [--replicas N] [--keep]
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { generateCorpus, mutateCorpus } from './corpus.js'
import { treeDiff } from './tree-compare.js'

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const bin = join(repo, 'bin/snapshot')

function snapshot(args: string[]): { json: Record<string, unknown>; seconds: number } {
  const started = process.hrtime.bigint()
  const r = spawnSync(process.execPath, [bin, ...args, '--json', '--quiet'], { encoding: 'utf8' })
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  if (r.status !== 0) throw new Error(`snapshot ${args.join(' ')} failed (${r.status}):\n${r.stderr}`)
  return { json: JSON.parse(r.stdout) as Record<string, unknown>, seconds }
}

function say(line: string): void {
  process.stdout.write(line + '\n')
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { files: { type: 'string', default: '20000' }, replicas: { type: 'string', default: '3' }, keep: { type: 'boolean', default: false } } })
  const files = Number(values.files)
  const replicas = Number(values.replicas)
  const dir = join(repo, '.demo')
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(join(dir, 'store'), { recursive: true })
  const master = join(dir, 'master')
  const store = join(dir, 'store')
  const keys = join(dir, 'keys')

  say(`1. generating a sample tree of ${files} playlists in ${master}`)
  const corpus = await generateCorpus({ files, out: master, seed: 'demo' })
  say(`   ${corpus.files} files in ${corpus.dirs} directories (${(corpus.bytes / 1e6).toFixed(1)} MB) in ${corpus.seconds.toFixed(1)} s`)
  addOddNames(master)
  say(`   plus odd/: names with a backslash, a newline, bytes that are not UTF-8, NFC and NFD spellings; links absolute, dangling, outside the tree`)
  // A build reads again any file written in the two seconds before its scan (the clock could hide
  // a second write): a real tree is older than that, so let the fresh sample age past it.
  await new Promise((r) => setTimeout(r, 2100))
  snapshot(['keygen', '--out', keys])
  say(`2. signing key: ${keys}/snapshot.key; replicas trust ${keys}/snapshot.pub`)

  const server = spawn(process.execPath, [bin, 'serve', '--store', store, '--host', '127.0.0.1', '--port', '0', '--json', '--quiet'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const url = await new Promise<string>((ok, fail) => {
    createInterface({ input: server.stdout! }).once('line', (l) => ok((JSON.parse(l) as { url: string }).url))
    server.once('exit', (code) => fail(new Error(`snapshot serve exited ${code}`)))
  })
  say(`3. snapshot serve --store ${store}  ->  ${url}`)
  try {
    const build = (): void => {
      const b = snapshot(['build', '--source', master, '--store', store, '--key', join(keys, 'snapshot.key')])
      const j = b.json
      say(`   build: snapshot ${j.id} (${j.kind}), ${j.changed} changed, ${j.deleted} deleted, ${j.filesRead} files read, ${b.seconds.toFixed(2)} s` + (j.deltaBytes ? `, delta ${j.deltaBytes} bytes` : '') + (j.fullBytes ? `, full ${j.fullBytes} bytes` : ''))
    }
    const pullAll = (): void => {
      for (let i = 1; i <= replicas; i++) {
        const target = join(dir, `replica-${i}`)
        const p = snapshot(['pull', '--from', url, '--target', target, '--pubkey', join(keys, 'snapshot.pub'), '--swap'])
        const plan = p.json.plan as { steps: { id: number; use: string }[]; downloadBytes: number } | null
        const diff = treeDiff(master, target)
        say(`   pull --swap replica-${i}: ${p.json.action} to snapshot ${p.json.id}` + (plan ? ` via ${plan.steps.map((s) => `${s.use} ${s.id}`).join(' + ')}, ${plan.downloadBytes} bytes downloaded` : '') + `, ${p.seconds.toFixed(2)} s; ${diff.length === 0 ? 'identical to the master (names as bytes, contents, modes, links, mtimes)' : `DIFFERS in ${diff.length} paths`}`)
        if (diff.length) throw new Error(`replica-${i} differs from the master:\n${diff.slice(0, 10).join('\n')}`)
      }
    }
    say('4. first build (full) and first pulls')
    build()
    pullAll()
    for (let hour = 1; hour <= 2; hour++) {
      const m = await mutateCorpus({ out: master, seed: `demo-hour-${hour}` })
      const touched = Buffer.from(`${master}/odd/not-utf8-\xff\xfe.m3u`, 'latin1')
      utimesSync(touched, new Date(), new Date(Date.UTC(2020, hour, 1)))
      say(`5.${hour} one hour of change: ${m.modified} edited, ${m.deleted} deleted, ${m.added} added, and one file's mtime alone set back`)
      await new Promise((r) => setTimeout(r, 2100))
      build()
      pullAll()
    }
    snapshot(['build', '--source', master, '--store', store, '--key', join(keys, 'snapshot.key')])
    say('6. an unchanged tree makes no new snapshot; every replica serves the master\'s tree, deletions included.')
  } finally {
    server.kill('SIGTERM')
    if (!values.keep) rmSync(dir, { recursive: true, force: true })
  }
}

/** Names and links a tree grows in the wild; each must reach every replica byte for byte. */
function addOddNames(master: string): void {
  const at = (name: string): Buffer => Buffer.from(`${master}/odd/${name}`, 'latin1') // names as bytes
  mkdirSync(join(master, 'odd'))
  for (const name of ['back\\slash.m3u', 'new\nline.m3u', 'tab\there.m3u', 'not-utf8-\xff\xfe.m3u', 'latin1-caf\xe9.m3u', 'caf\xc3\xa9.m3u', 'cafe\xcc\x81.m3u']) {
    writeFileSync(at(name), `#EXTM3U\n#EXTINF:-1,${Buffer.from(name, 'latin1').toString('hex')}\n`)
  }
  symlinkSync('/srv/music/current.m3u', at('absolute-link'))
  symlinkSync('../../elsewhere', at('outside-link'))
  symlinkSync('no-such-file.m3u', at('dangling-link'))
}

main().catch((err: Error) => {
  process.stderr.write(`demo failed: ${err.message}\n`)
  process.exitCode = 1
})
