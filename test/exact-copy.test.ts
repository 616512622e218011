import assert from 'node:assert/strict'
import { chmodSync, linkSync, lstatSync, lutimesSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import { runCli, runJson } from './helpers/cli.js'
import { masterFixture } from './helpers/master-fixture.js'
import { treeDiff } from './helpers/tree.js'

/**
 * The replica is an exact copy: every name Linux allows, as bytes; every symlink, wherever it
 * points; every mtime (files, directories, links, the root) and the root's mode; through the real
 * CLI and a real `snapshot serve`, over fulls, deltas, tree rotations and a rollback.
 */
const b = (s: string): Buffer => Buffer.from(s, 'latin1') // a name's bytes, written with \xHH escapes

describe('exact copy: names as bytes, links verbatim, mtimes', () => {
  const { dir, source, store, keys, server } = masterFixture('snapshot-exact-', { serve: true })
  const at = (rel: string): Buffer => Buffer.concat([Buffer.from(source + '/'), b(rel)])

  before(async () => {
    mkdirSync(at('odd'))
    for (const name of ['odd/back\\slash.m3u', 'odd/new\nline', 'odd/tab\there', 'odd/caf\xc3\xa9.m3u', 'odd/cafe\xcc\x81.m3u', 'odd/latin1-caf\xe9.m3u', 'odd/\xff\xfe', 'odd/\\']) {
      writeFileSync(at(name), `#EXTM3U\n${Buffer.from(name, 'latin1').toString('hex')}\n`)
    }
    mkdirSync(at('deep/\xc3\x28'), { recursive: true })
    writeFileSync(at('deep/\xc3\x28/x.m3u'), 'x\n')
    symlinkSync('/etc/passwd', at('links-absolute'))
    symlinkSync('../../outside/of/the/tree', at('links-outside'))
    symlinkSync('nowhere', at('links-dangling'))
    symlinkSync('links-loop', at('links-loop'))
    symlinkSync(b('odd/\xff\xfe'), at('links-to-bytes'))
    writeFileSync(at('hard-a.m3u'), 'shared inode\n')
    linkSync(at('hard-a.m3u'), at('hard-b.m3u'))
    // Times of every kind, nanoseconds included where the file system keeps them.
    utimesSync(at('odd/back\\slash.m3u'), 1_600_000_000.25, 1_600_000_000.123456)
    lutimesSync(at('links-absolute'), 1_500_000_000, 1_500_000_000.5)
    utimesSync(at('deep/\xc3\x28'), 1_400_000_000, 1_400_000_000.75)
    chmodSync(source, 0o750) // a private root stays private
  })

  const build = (...extra: string[]) => runJson<{ id: number; kind: string; created: boolean; changed: number; warnings: string[] }>(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--quiet', ...extra])
  const pull = (target: string, ...extra: string[]) => runJson<{ action: string; id: number }>(['pull', '--from', server.url, '--target', target, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--quiet', ...extra])
  /** A replica keeps only the objects its trees may still replay: verify fetches the rest. */
  const verifyArgs = (target: string, ...extra: string[]) => ['verify', '--target', target, '--from', server.url, '--pubkey', join(keys, 'snapshot.pub'), ...extra]
  /** The master's root mtime moves when an entry is added or removed there: set it, as an operator's tree would have. */
  const settleRoot = (): void => utimesSync(source, 1_700_000_000, 1_700_000_000.000001)

  test('a full, then deltas: every name, link, mode and mtime arrives, none skipped', async () => {
    settleRoot()
    const first = await build()
    assert.deepEqual(first.warnings, [], 'nothing is skipped')
    const target = join(dir, 'r-full')
    assert.equal((await pull(target)).action, 'swapped')
    assert.deepEqual(treeDiff(source, target), [])
    assert.equal(readlinkSync(join(target, 'links-absolute')), '/etc/passwd')
    assert.equal((lstatSync(target + '/').mode & 0o777), 0o750)
    // To the microsecond (core/mtime.ts): what Node sets, on every libuv (Node 24 keeps the double's nanoseconds).
    const micros = (p: Buffer): bigint => lstatSync(p, { bigint: true }).mtimeNs / 1000n
    assert.equal(micros(Buffer.concat([Buffer.from(target + '/'), b('odd/back\\slash.m3u')])), micros(at('odd/back\\slash.m3u')))
    const verify = await runCli(verifyArgs(target))
    assert.equal(verify.code, 0, verify.stderr)

    // A touch alone is a change; so is a chmod of the root; unchanged files keep their times
    // across the tree rotation (--trees 2 rebuilds the previous tree by replaying two hours).
    utimesSync(at('odd/tab\there'), 1_650_000_000, 1_650_000_000.5)
    const touched = await build()
    assert.equal(touched.created, true, 'an mtime change is a change')
    assert.equal((await pull(target)).id, touched.id)
    assert.deepEqual(treeDiff(source, target), [])
    chmodSync(source, 0o755)
    writeFileSync(at('odd/\xff\xfe'), 'rewritten\n')
    settleRoot()
    const second = await build()
    assert.equal((await pull(target)).id, second.id)
    assert.deepEqual(treeDiff(source, target), [])
    rmSync(at('odd/new\nline'))
    symlinkSync('/srv/elsewhere', at('odd/new-link'))
    const third = await build()
    assert.equal((await pull(target)).id, third.id)
    assert.deepEqual(treeDiff(source, target), [], 'after two rotations every tree that went live has the master\'s times')
  })

  test('verify --target names a path whose mtime differs, escaped, and exits 3', async () => {
    const target = join(dir, 'r-verify')
    await pull(target)
    const victim = Buffer.concat([Buffer.from(target + '/'), b('odd/\xff\xfe')])
    utimesSync(victim, 1_000_000_000, 1_000_000_000)
    const r = await runCli(verifyArgs(target))
    assert.equal(r.code, 3)
    assert.match(r.stdout, /odd\/\\xff\\xfe: mtime 1000000000\.000000000, the snapshot says \d+\.\d{9}/)
    const json = await runCli(verifyArgs(target, '--json'))
    assert.deepEqual(JSON.parse(json.stdout).problems.map((p: { path: string }) => p.path), ['odd/\\xff\\xfe'])
  })

  test('a rollback serves the earlier tree with its own times', async () => {
    const target = join(dir, 'r-rollback')
    const copy = join(dir, 'master-before')
    await pull(target)
    const cp = await import('node:child_process')
    assert.equal(cp.spawnSync('cp', ['-a', '--', source, copy]).status, 0)
    writeFileSync(at('odd/caf\xc3\xa9.m3u'), 'the next hour\n')
    await build()
    await pull(target)
    const rb = await runJson<{ to: number }>(['rollback', '--target', target])
    assert.ok(rb.to > 0)
    assert.deepEqual(treeDiff(copy, target), [])
  })

  test("a name the replica's file system cannot hold is a clear error, and nothing live changes", async () => {
    // Linux refuses a path of 4096 bytes or more: a replica placed deep enough cannot hold a
    // snapshot's longest path, which is within the format's 3800 bytes.
    const deepParent = join(dir, ...Array.from({ length: 8 }, (_, i) => `${i}${'d'.repeat(60)}`))
    mkdirSync(deepParent, { recursive: true })
    const target = join(deepParent, 'replica')
    await pull(target)
    const served = join(dir, 'master-served')
    const cp = await import('node:child_process')
    assert.equal(cp.spawnSync('cp', ['-a', '--', source, served]).status, 0)
    assert.deepEqual(treeDiff(source, target), [])
    let rel = 'long'
    while (rel.length < 3600) rel += '/' + 'n'.repeat(200)
    mkdirSync(at(rel), { recursive: true })
    writeFileSync(at(rel + '/leaf.m3u'), 'too deep for that replica\n')
    await build()
    const r = await runCli(['pull', '--from', server.url, '--target', target, '--pubkey', join(keys, 'snapshot.pub'), '--swap', '--quiet'])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /\[ERR_NAME_UNSUPPORTED\]: the file system of .* cannot hold "long\/n+.*" \(ENAMETOOLONG\)/)
    rmSync(at('long'), { recursive: true })
    assert.equal(readFileSync(join(target, 'hard-a.m3u'), 'utf8'), 'shared inode\n')
    assert.deepEqual(treeDiff(served, target), [], 'the live tree still serves the snapshot it served')
  })
})
