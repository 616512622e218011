import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import zlib from 'node:zlib'
import { describeTree, writeTree } from './helpers/tree.js'

/**
 * The operator's install: `npm pack`, then `npm install -g` of the tarball into a fresh prefix,
 * on a machine with a compiler and on one without (zstd-napi cannot build: the WASM fallback,
 * said once per process). The installed `snapshot`, found on the PATH, then runs the README's
 * quick start: keygen, build, serve, pull --pubkey --swap. Needs the npm registry (the
 * package's dependencies); `--prefer-offline` reuses npm's cache.
 */
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { name: string; version: string }
const NODE_HAS_ZSTD = typeof (zlib as unknown as { createZstdCompress?: unknown }).createZstdCompress === 'function'
const work = mkdtempSync(join(tmpdir(), 'install-test-'))
after(() => rmSync(work, { recursive: true, force: true }))
let tarball = ''

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? work, env: opts.env ?? process.env, encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 })
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}\n${r.stderr ?? ''}`)
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

before(() => {
  // --ignore-scripts: `prepare` would only run tsc again; this test runs from the dist it packs.
  const r = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: REPO })
  assert.equal(r.code, 0, r.stderr)
  tarball = join(work, (JSON.parse(r.stdout) as Array<{ filename: string }>)[0]!.filename)
})

test('the tarball holds the CLI, its docs and service units, and no tests, scripts, sources or maps', () => {
  assert.equal(tarball, join(work, `${PKG.name}-${PKG.version}.tgz`))
  const files = run('tar', ['-tzf', tarball]).stdout.trim().split('\n').map((f) => f.replace(/^package\//, ''))
  for (const needed of ['package.json', 'README.md', 'bin/snapshot', 'dist/src/cli/main.js', 'dist/src/archive/zstd-codec.js', 'docs/FORMAT.md', 'deploy/systemd/snapshot-pull.service', 'deploy/systemd/replica.json']) {
    assert.ok(files.includes(needed), `${needed} is missing from the tarball`)
  }
  const stray = files.filter((f) => /^(dist\/(test|scripts)\/|src\/|test\/|scripts\/)|\.map$|\.ts$|^tsconfig/.test(f))
  assert.deepEqual(stray, [])
})

/**
 * A PATH like this machine's without a C/C++ compiler or make: what a bare server with only Node
 * has. (Taking PATH away entirely would also take `sh`, which npm runs install scripts with.)
 */
function pathWithoutCompiler(): string {
  const bin = join(work, 'no-compiler-bin')
  mkdirSync(bin)
  const compiler = /^(cc|c\+\+|gcc|g\+\+|cpp|clang.*|make|gmake)(-[\d.]+)?$|-linux-gnu-(gcc|g\+\+|cpp|c\+\+)/
  for (const dir of process.env['PATH']!.split(delimiter)) {
    if (!existsSync(dir)) continue
    for (const name of readdirSync(dir)) {
      if (!compiler.test(name) && !existsSync(join(bin, name))) symlinkSync(join(dir, name), join(bin, name))
    }
  }
  return bin
}

function install(prefix: string, path: string): void {
  const r = run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--allow-scripts=zstd-napi', tarball], {
    env: { ...process.env, PATH: path },
    timeoutMs: 300_000,
  })
  assert.equal(r.code, 0, `npm install -g failed:\n${r.stderr}`)
  const installed = join(prefix, 'lib', 'node_modules', PKG.name)
  assert.ok(!existsSync(join(installed, 'node_modules', 'typescript')), 'TypeScript must not be needed at install time')
}

/** The README's quick start with the installed binary, found on `path`; returns the stderr of build and pull. */
async function quickStart(dir: string, path: string): Promise<{ version: string; buildErr: string; pullErr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: path }
  delete env['SNAPSHOT_ZSTD'] // the automatic choice is what an operator gets
  const snapshot = (...args: string[]) => run('snapshot', args, { env })
  const version = snapshot('--version')
  assert.equal(version.code, 0, version.stderr)

  const source = join(dir, 'source')
  writeTree(source, { 'a.m3u': '#EXTM3U\none.mp3\n', 'lists/b.m3u': '#EXTM3U\ntwo.mp3\n', 'lists/deep/c.m3u': 'three\n', 'empty': { dir: true }, 'now.m3u': { link: 'a.m3u' } })
  const keys = join(dir, 'keys')
  const store = join(dir, 'store')
  assert.equal(snapshot('keygen', '--out', keys).code, 0)
  const build = snapshot('build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--json')
  assert.equal(build.code, 0, build.stderr)
  assert.equal((JSON.parse(build.stdout) as { kind: string }).kind, 'full')

  const serve = spawn('snapshot', ['serve', '--store', store, '--host', '127.0.0.1', '--port', '0', '--json', '--quiet'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  try {
    const url = await new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error('the installed serve did not start')), 20_000)
      createInterface({ input: serve.stdout }).once('line', (line) => {
        clearTimeout(timer)
        resolveUrl((JSON.parse(line) as { url: string }).url)
      })
      serve.once('exit', (code) => reject(new Error(`the installed serve exited ${code}`)))
    })
    const target = join(dir, 'replica', 'playlists')
    mkdirSync(dirname(target))
    const pull = snapshot('pull', '--from', url, '--target', target, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--json')
    assert.equal(pull.code, 0, pull.stderr)
    assert.equal((JSON.parse(pull.stdout) as { action: string }).action, 'swapped')
    assert.deepEqual(describeTree(target), describeTree(source))
    return { version: version.stdout.trim(), buildErr: build.stderr, pullErr: pull.stderr }
  } finally {
    serve.kill('SIGTERM')
  }
}

function count(text: string, what: RegExp): number {
  return text.match(new RegExp(what.source, 'g'))?.length ?? 0
}

const FALLBACK_NOTE = /zstd runs on the WASM fallback/

test('npm install -g without a compiler: snapshot on the PATH, the WASM zstd said once per process, the quick start runs', async () => {
  const noCompiler = pathWithoutCompiler()
  const prefix = join(work, 'prefix-no-compiler')
  install(prefix, noCompiler)
  assert.ok(!existsSync(join(prefix, 'lib', 'node_modules', PKG.name, 'node_modules', 'zstd-napi', 'build', 'Release', 'binding.node')))
  // The installed launcher runs on `env node`: this test's Node comes first on the PATH.
  const path = [join(prefix, 'bin'), dirname(process.execPath), noCompiler].join(delimiter)
  const r = await quickStart(join(work, 'run-no-compiler'), path)
  const zstd = NODE_HAS_ZSTD ? 'node' : 'wasm'
  assert.equal(r.version, `${PKG.name} ${PKG.version} (node ${process.version}, zstd: ${zstd})`)
  const notes = NODE_HAS_ZSTD ? 0 : 1
  assert.equal(count(r.buildErr, FALLBACK_NOTE), notes, r.buildErr)
  assert.equal(count(r.pullErr, FALLBACK_NOTE), notes, r.pullErr)
})

test('npm install -g with a compiler: zstd-napi is built at install and used', async () => {
  const prefix = join(work, 'prefix-compiler')
  install(prefix, process.env['PATH']!)
  assert.ok(existsSync(join(prefix, 'lib', 'node_modules', PKG.name, 'node_modules', 'zstd-napi', 'build', 'Release', 'binding.node')))
  const path = [join(prefix, 'bin'), dirname(process.execPath), process.env['PATH']].join(delimiter)
  const r = await quickStart(join(work, 'run-compiler'), path)
  assert.equal(r.version, `${PKG.name} ${PKG.version} (node ${process.version}, zstd: ${NODE_HAS_ZSTD ? 'node' : 'napi'})`)
  assert.equal(count(r.buildErr + r.pullErr, FALLBACK_NOTE), 0)
})
