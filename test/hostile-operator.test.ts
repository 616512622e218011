import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { checkFreshness } from '../src/core/freshness.js'
import { ClockSkewError, StaleError } from '../src/core/errors.js'
import { TarPacker } from '../src/archive/tar-pack.js'
import { buildSnapshot } from '../src/master/build.js'
import { LARGE_FILE_BYTES, SourceReader } from '../src/master/source-reader.js'
import { BIN, runCli, runJson, startServe } from './helpers/cli.js'
import { treeDiff, writeTree } from './helpers/tree.js'

/**
 * Issue 19, "a hostile operator's week": each case the operator met, through the real CLI on real
 * directories (and `snapshot serve` on 127.0.0.1). Every test here failed on main at b405f86.
 * The churn and the 5 GiB file have files of their own (hostile-operator-churn, -large).
 */

interface Built {
  id: number
  created: boolean
  kind: string
  warnings: string[]
  skipped: { count: number; byReason: Record<string, number> }
  setIdDropped: number
  clockWentBack: { parent: number; seconds: number } | null
  deadTemps?: { files: number; bytes: number }
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-hostile-op-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const build = (source: string, store: string, ...extra: string[]) => ['build', '--source', source, '--store', store, ...extra]

test('skips are counted by reason, warned once per subtree, shown with --quiet, and --strict refuses them (exit 17)', async (t) => {
  const dir = tempDir(t)
  const source = join(dir, 'source')
  const store = join(dir, 'store')
  writeTree(source, { 'a.m3u': 'a\n', 'b/c.m3u': 'c\n' })
  // A chain 300 levels deep: entries 257 to 300 (and the file at the bottom) are too deep.
  const chain = Array.from({ length: 300 }, () => 'd').join('/')
  mkdirSync(join(source, chain), { recursive: true })
  writeFileSync(join(source, chain, 'bottom.m3u'), 'deep\n')
  const fifo = spawnSync('mkfifo', [join(source, 'pipe')])
  assert.equal(fifo.status, 0, 'mkfifo (coreutils) is needed: run scripts/test-deps.sh')

  const r = await runJson<Built>(build(source, store))
  assert.equal(r.created, true)
  assert.deepEqual(r.skipped, { count: 46, byReason: { name: 45, special: 1 } }) // 44 dirs + 1 file too deep, 1 fifo
  const skipWarnings = r.warnings.filter((w) => w.startsWith('skipped'))
  assert.equal(skipWarnings.length, 2, skipWarnings.join('\n')) // one for the fifo, one for the whole deep subtree
  assert.match(skipWarnings.find((w) => w.includes('deeper'))!, /nested deeper than 256 levels \(and the 44 entries below it\)/)

  // --quiet hides the per-entry lines, not the count.
  writeFileSync(join(source, 'a.m3u'), 'a2\n')
  const quiet = await runCli([...build(source, store), '--quiet'])
  assert.equal(quiet.code, 0, quiet.stderr)
  assert.equal(quiet.stderr.trim().split('\n').length, 1, quiet.stderr)
  assert.match(quiet.stderr, /skipped: 46 entries left out of the snapshot \(name 45, special 1\)/)
  assert.match(quiet.stdout, /skipped: 46 entries/)

  // --strict: any skip is an error, and nothing is published.
  const before = readFileSync(join(store, 'latest.json'))
  writeFileSync(join(source, 'a.m3u'), 'a3\n')
  const strict = await runCli([...build(source, store), '--strict'])
  assert.equal(strict.code, 17, strict.stderr)
  assert.match(strict.stderr, /ERR_SKIPPED.*--strict: 46 entries would be left out .*\(name 45, special 1\); nothing was published/)
  assert.deepEqual(readFileSync(join(store, 'latest.json')), before)
  // Without skips, --strict publishes.
  rmSync(join(source, 'd'), { recursive: true })
  rmSync(join(source, 'pipe'))
  const clean = await runJson<Built>([...build(source, store), '--strict'])
  assert.equal(clean.created, true)
  assert.deepEqual(clean.skipped, { count: 0, byReason: {} })
})

test('a store inside the source, or the source inside the store, is a usage error naming both real paths', async (t) => {
  const dir = tempDir(t)
  const source = join(dir, 'source')
  writeTree(source, { 'a.m3u': 'a\n' })
  const inside = await runCli(build(source, join(source, 'store')))
  assert.equal(inside.code, 2, inside.stderr)
  assert.match(inside.stderr, /--store .*source\/store.* is inside --source .*source/)
  assert.ok(!existsSync(join(source, 'store')), 'nothing was created in the source')
  // Through a symlink: the real paths are compared.
  symlinkSync(source, join(dir, 'alias'))
  mkdirSync(join(source, 'sub'))
  const viaLink = await runCli(build(join(dir, 'alias'), join(source, 'sub', 'store')))
  assert.equal(viaLink.code, 2, viaLink.stderr)
  // The source inside the store.
  const store = join(dir, 'store')
  writeTree(join(store, 'incoming'), { 'x.m3u': 'x\n' })
  const outer = await runCli(build(join(store, 'incoming'), store))
  assert.equal(outer.code, 2, outer.stderr)
  assert.match(outer.stderr, /--source .*store\/incoming.* is inside --store /)
  assert.equal((await runJson<Built>(build(source, join(dir, 'apart')))).created, true)
})

test('setuid and setgid bits are dropped with a warning each, and counted', async (t) => {
  const dir = tempDir(t)
  const source = join(dir, 'source')
  writeTree(source, { 'plain.m3u': 'p\n', 'run.sh': { content: '#!/bin/sh\n', mode: 0o755 }, 'shared': { dir: true } })
  chmodSync(join(source, 'run.sh'), 0o4755)
  chmodSync(join(source, 'shared'), 0o2775)
  const r = await runJson<Built>(build(source, join(dir, 'store')))
  assert.equal(r.setIdDropped, 2)
  const lines = r.warnings.filter((w) => w.startsWith('dropped the setuid/setgid'))
  assert.equal(lines.length, 2, r.warnings.join('\n'))
  assert.match(lines.join('\n'), /"run\.sh" \(mode 4755 carried as 755\)/)
  assert.match(lines.join('\n'), /"shared" \(mode 2775 carried as 775\)/)
  // Said on every build that carries them (the next one too), on stderr.
  writeFileSync(join(source, 'plain.m3u'), 'p2\n')
  const again = await runCli(build(source, join(dir, 'store')))
  assert.equal(again.code, 0, again.stderr)
  assert.match(again.stderr, /warning: dropped the setuid\/setgid bits of "run\.sh"/)
  assert.match(again.stdout, /setuid\/setgid bits dropped: 2 entries/)
})

test('--store naming a file is a usage error; a locked store names a --wait that build accepts', async (t) => {
  const dir = tempDir(t)
  const source = join(dir, 'source')
  writeTree(source, { 'a.m3u': 'a\n' })
  writeFileSync(join(dir, 'file'), 'not a store')
  for (const store of [join(dir, 'file'), join(dir, 'file', 'below')]) {
    const r = await runCli(build(source, store))
    assert.equal(r.code, 2, r.stderr)
    assert.match(r.stderr, /ERR_USAGE.*--store .*file.* is not a directory/)
    assert.doesNotMatch(r.stderr, /ENOTDIR|    at /) // no raw errno, no stack
  }

  const store = join(dir, 'store')
  await runJson(build(source, store))
  // A live holder (this test process) of the store's lock.
  const lock = join(store, '.state', 'build.lock')
  writeFileSync(lock, `${process.pid} ${hostname()} ${new Date().toISOString()}\n`)
  writeFileSync(join(source, 'a.m3u'), 'a2\n')
  const locked = await runCli(build(source, store))
  assert.equal(locked.code, 11, locked.stderr)
  assert.match(locked.stderr, /pass --wait SECONDS/)
  const waited = await runCli([...build(source, store), '--wait', '1'])
  assert.equal(waited.code, 11, waited.stderr) // accepted, and waited in vain
  setTimeout(() => rmSync(lock, { force: true }), 500)
  const r = await runCli([...build(source, store), '--wait', '20', '--json'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal((JSON.parse(r.stdout) as Built).created, true)
})

test('rolling a replica back to a pruned snapshot exits 10 (the objects are gone), not 4', async (t) => {
  const dir = tempDir(t)
  const source = join(dir, 'source')
  const store = join(dir, 'store')
  const replica = join(dir, 'replica')
  writeTree(source, { 'a.m3u': 'a\n' })
  await runJson(build(source, store))
  await runJson(['pull', '--from', store, '--target', replica, '--swap'])
  for (const [n, extra] of [['b', []], ['c', ['--full']]] as const) {
    writeFileSync(join(source, `${n}.m3u`), `${n}\n`)
    await runJson([...build(source, store), ...extra])
    await runJson(['pull', '--from', store, '--target', replica, '--swap'])
  }
  await runJson(['prune', '--store', store, '--keep', '1', '--grace', '0'])
  const server = await startServe(store)
  t.after(() => server.stop())
  for (const from of [store, server.url]) {
    const r = await runCli(['rollback', '--target', replica, '--to', '1', '--from', from])
    assert.equal(r.code, 10, r.stderr)
    assert.match(r.stderr, /ERR_NO_SNAPSHOT.*cannot rebuild snapshot 1: .*missing from the store/)
  }
  assert.deepEqual(treeDiff(source, replica), []) // nothing live changed
})

test('a master clock that went backwards is flagged at build time, and replicas call it clock skew', async (t) => {
  const dir = tempDir(t)
  const source = join(dir, 'source')
  const store = join(dir, 'store')
  writeTree(source, { 'a.m3u': 'a\n' })
  const policy = { deltaBytesRatio: 1, maxChain: 48 }
  const lines: string[] = []
  const common = { source, store, privateKey: null, forceFull: false, policy, log: (l: string) => lines.push(l) }
  const first = await buildSnapshot({ ...common })
  assert.equal(first.clockWentBack, null)
  writeFileSync(join(source, 'a.m3u'), 'a2\n')
  // The master's clock jumps back five hours.
  const back = new Date(Date.now() - 5 * 3600_000)
  const second = await buildSnapshot({ ...common, now: () => back })
  assert.equal(second.created, true)
  assert.equal(second.clockWentBack?.parent, first.id)
  assert.ok(second.clockWentBack!.seconds > 5 * 3600 - 60)
  assert.ok(lines.some((l) => /warning: the clock went backwards: .* before snapshot 1's/.test(l)), lines.join('\n'))

  // A replica: the pull succeeds, and the alarm names the skew, not a frozen mirror.
  const replica = join(dir, 'replica')
  const pulled = await runCli(['pull', '--from', store, '--target', replica, '--swap'])
  assert.equal(pulled.code, 13, pulled.stderr)
  assert.match(pulled.stderr, /ERR_CLOCK_SKEW.*clock skew on the master/)
  assert.doesNotMatch(pulled.stderr, /frozen\?/)
  assert.deepEqual(treeDiff(source, replica), [])
  const status = await runCli(['status', '--target', replica, '--from', store])
  assert.equal(status.code, 13, status.stderr)
  assert.match(status.stderr, /ERR_CLOCK_SKEW/)

  // The pure check: skew is told apart from staleness.
  const now = Date.parse('2026-01-01T12:00:00Z')
  assert.throws(() => checkFreshness('2026-01-01T06:00:00Z', 3 * 3600, now, '2026-01-01T11:00:00Z'), ClockSkewError)
  assert.throws(() => checkFreshness('2026-01-01T06:00:00Z', 3 * 3600, now, '2026-01-01T05:00:00Z'), (e: unknown) => e instanceof StaleError)
  checkFreshness('2026-01-01T11:00:00Z', 3 * 3600, now, '2026-01-01T11:30:00Z') // young enough: no alarm
})

test('pull --pubkey given the private key file refuses it (exit 2), saying to copy only the .pub', async (t) => {
  const dir = tempDir(t)
  await runJson(['keygen', '--out', join(dir, 'keys')])
  const source = join(dir, 'source')
  writeTree(source, { 'a.m3u': 'a\n' })
  await runJson(build(source, join(dir, 'store'), '--key', join(dir, 'keys', 'snapshot.key')))
  const r = await runCli(['pull', '--from', join(dir, 'store'), '--target', join(dir, 'replica'), '--pubkey', join(dir, 'keys', 'snapshot.key'), '--swap'])
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, /--pubkey .*snapshot\.key holds a PRIVATE key: give replicas only the public key \(snapshot\.pub/)
  assert.ok(!existsSync(join(dir, 'replica')))
  const ok = await runCli(['pull', '--from', join(dir, 'store'), '--target', join(dir, 'replica'), '--pubkey', join(dir, 'keys', 'snapshot.pub'), '--swap'])
  assert.equal(ok.code, 0, ok.stderr)
})

test('serve answers only the paths a store holds and refuses to start on a private key, by content, any name', async (t) => {
  const dir = tempDir(t)
  await runJson(['keygen', '--out', join(dir, 'keys')])
  const pem = readFileSync(join(dir, 'keys', 'snapshot.key'), 'utf8')
  const source = join(dir, 'source')
  const store = join(dir, 'store')
  writeTree(source, { 'a.m3u': 'a\n' })
  await runJson(build(source, store))

  for (const [file, content] of [
    ['objects/k.KEY', pem],
    ['objects/sub/renamed.pem', pem],
    ['snapshots/9.json', pem], // a served name
    ['notes/backup.txt', `saved on the master\n${pem.toLowerCase()}`], // any case, after other text
  ] as const) {
    const abs = join(store, file)
    mkdirSync(join(abs, '..'), { recursive: true })
    writeFileSync(abs, content)
    const r = await runCli(['serve', '--store', store, '--port', '0'], { timeoutMs: 15_000 })
    assert.equal(r.code, 6, `${file}: ${r.stderr}`)
    assert.match(r.stderr, new RegExp(`ERR_PRIVATE_KEY_IN_STORE.*${file.replace(/[.]/g, '\\.')}`))
    rmSync(abs)
  }

  // Stray files without keys: the server starts, and never serves them.
  writeFileSync(join(store, 'objects', 'notes.txt'), 'stray\n')
  writeFileSync(join(store, 'snapshots', 'draft.json'), '{}')
  writeFileSync(join(store, 'README'), 'hello\n')
  mkdirSync(join(store, 'objects', 'sub'), { recursive: true })
  writeFileSync(join(store, 'objects', 'sub', `${'a'.repeat(64)}.tar.zst`), 'x')
  const server = await startServe(store)
  t.after(() => server.stop())
  const status = async (path: string): Promise<number> => (await fetch(`${server.url}${path}`)).status
  const objects = readdirSync(join(store, 'objects')).filter((n) => /^[0-9a-f]{64}\.(tar|manifest)\.zst$/.test(n))
  assert.equal(objects.length, 2)
  assert.equal(await status('/latest.json'), 200)
  assert.equal(await status('/snapshots/1.json'), 200)
  for (const o of objects) assert.equal(await status(`/objects/${o}`), 200)
  for (const path of ['/objects/notes.txt', '/snapshots/draft.json', '/README', `/objects/sub/${'a'.repeat(64)}.tar.zst`, '/objects/sub/renamed.pem', '/snapshots/2.json']) {
    assert.equal(await status(path), 404, path)
  }
})

test('a build killed with kill -9 leaves a temp file as large as its archive; the next build removes it', async (t) => {
  const dir = tempDir(t)
  const source = join(dir, 'source')
  const store = join(dir, 'store')
  writeTree(source, { 'a.m3u': 'a\n' })
  await runJson(build(source, store))
  // 4 MiB of incompressible bytes: the archive's temp file holds several chunks when the kill comes.
  writeFileSync(join(source, 'big.bin'), randomBytes(4 << 20))
  const killed = spawnSync(process.execPath, [BIN, ...build(source, store), '--quiet'], { env: { ...process.env, SNAPSHOT_CRASH_AT: 'object:chunk#2' }, encoding: 'utf8' })
  assert.equal(killed.signal, 'SIGKILL', killed.stderr)
  const temps = readdirSync(join(store, 'objects')).filter((n) => /^\.incoming\.tar\.zst\..*\.tmp$/.test(n))
  assert.equal(temps.length, 1)
  assert.ok(statSync(join(store, 'objects', temps[0]!)).size > 0)

  const next = await runJson<Built>(build(source, store))
  assert.equal(next.created, true)
  assert.equal(next.deadTemps?.files, 2) // the archive's, and the manifest's spool
  assert.deepEqual(readdirSync(join(store, 'objects')).filter((n) => n.startsWith('.')), [])
  const v = await runCli(['verify', '--store', store])
  assert.equal(v.code, 0, v.stdout + v.stderr)
})

test('a large file is hashed, then streamed; one rewritten between the two is refused, by name, never packed torn', async (t) => {
  const dir = tempDir(t)
  const big = randomBytes(LARGE_FILE_BYTES + 12345)
  writeFileSync(join(dir, 'big.bin'), big)
  const reader = new SourceReader(dir)
  const read = reader.read('big.bin', 'f 644 0 x x 0') // a signature no stat matches: the careful read
  assert.ok('large' in read, 'a file of 16 MiB and more is not read whole')
  assert.equal(read.large.size, big.length)
  assert.equal(read.large.sha256, createHash('sha256').update(big).digest('hex'))

  // Packed: a tar stream GNU tar reads back, byte for byte.
  const chunks: Buffer[] = []
  const packer = new TarPacker(async (c) => void chunks.push(Buffer.from(c))) // the packer fills its buffer again
  await packer.addFile('big.bin', 0o644, 1_767_225_600, read.large)
  await packer.addFile('after.txt', 0o644, 1_767_225_600, Buffer.from('after\n'))
  const length = await packer.finish()
  const tar = Buffer.concat(chunks)
  assert.equal(tar.length, length)
  const out = join(dir, 'out')
  mkdirSync(out)
  const x = spawnSync('tar', ['-x', '-C', out], { input: tar })
  assert.equal(x.status, 0, 'GNU tar is needed: run scripts/test-deps.sh')
  assert.ok(readFileSync(join(out, 'big.bin')).equals(big))
  assert.equal(readFileSync(join(out, 'after.txt'), 'utf8'), 'after\n')

  // Rewritten (same size) after its hashing: streaming it refuses, naming the file.
  writeFileSync(join(dir, 'big.bin'), randomBytes(big.length))
  const sink = new TarPacker(async () => undefined)
  await assert.rejects(sink.addFile('big.bin', 0o644, 1_767_225_600, read.large), /"big\.bin" \(\d+ bytes\) changed between its hashing and its packing: nothing was published/)
})
