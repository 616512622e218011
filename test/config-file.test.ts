import assert from 'node:assert/strict'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { configKeys, parseConfigText, selectConfigValues, type KnownKeys } from '../src/cli/config-file.js'
import { runCli, runJson, startServe } from './helpers/cli.js'
import { treeDiff, writeTree } from './helpers/tree.js'

describe('config file: choosing the values for a command (pure)', () => {
  const keysFor = (...flags: string[]) => new Map(flags.flatMap((flag) => configKeys(flag).map((k) => [k, flag] as const)))
  const known: KnownKeys = new Map([
    ['build', keysFor('--source', '--store', '--max-chain', '--cron')],
    ['serve', keysFor('--store', '--port')],
  ])

  test('keys are the long names, in kebab-case or camelCase', () => {
    assert.deepEqual(configKeys('--max-chain'), ['max-chain', 'maxChain'])
    assert.deepEqual(configKeys('--store'), ['store'])
  })

  test("a command's section overrides the top level; another command's keys are left to it", () => {
    const sel = selectConfigValues({ store: '/top', port: 9000, build: { store: '/section', maxChain: 5 }, serve: { port: 8081 } }, 'build', known)
    assert.deepEqual(sel.unknown, [])
    assert.deepEqual(sel.duplicates, [])
    assert.deepEqual([...sel.values], [
      ['--store', { key: 'build.store', value: '/section' }],
      ['--max-chain', { key: 'build.maxChain', value: 5 }],
    ])
  })

  test('keys that no command knows are reported, in sections too; a key given in both spellings is a duplicate', () => {
    const sel = selectConfigValues({ sorce: 'x', build: { 'max-chain': 1, maxChain: 2, fulll: true }, bulid: { source: 'y' }, serve: { cron: '* * * * *' } }, 'build', known)
    assert.deepEqual(sel.unknown, ['sorce', 'build.fulll', 'bulid', 'serve.cron'])
    assert.deepEqual(sel.duplicates, ['"build.max-chain" and "build.maxChain"'])
  })

  test('the file must hold one JSON object', () => {
    assert.deepEqual(parseConfigText('\uFEFF{"a": 1}'), { a: 1 })
    assert.throws(() => parseConfigText('{"a": 1,}'), /not valid JSON/)
    assert.throws(() => parseConfigText('[1]'), /one JSON object/)
  })
})

describe('config file through the CLI', () => {
  let dir: string
  let source: string
  let keys: string
  const file = (name: string, content: unknown): string => {
    const path = join(dir, name)
    writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content))
    return path
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-config-'))
    source = join(dir, 'master')
    keys = join(dir, 'keys')
    writeTree(source, { 'a.m3u': 'a\n', 'sub/b.m3u': 'b\n' })
    await runJson(['keygen', '--out', keys])
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  test('build takes source, store and key from the file alone (required options included)', async () => {
    const store = join(dir, 'store-a')
    mkdirSync(store)
    const config = file('master.json', { source, store, key: join(keys, 'snapshot.key'), port: 8080, build: { 'max-chain': 3, fullRatio: '2.5' } })
    const r = await runJson<{ created: boolean; id: number }>(['build', '--config', config])
    assert.equal(r.created, true)
    assert.ok(existsSync(join(store, 'latest.json')))
  })

  test('a flag wins over the file, and the file over the defaults', async () => {
    const fileStore = join(dir, 'store-file')
    const flagStore = join(dir, 'store-flag')
    mkdirSync(fileStore)
    mkdirSync(flagStore)
    const config = file('override.json', { source, store: fileStore, quiet: true })
    const r = await runCli(['build', '--config', config, '--store', flagStore, '--json'])
    assert.equal(r.code, 0, r.stderr)
    assert.ok(existsSync(join(flagStore, 'latest.json')))
    assert.ok(!existsSync(join(fileStore, 'latest.json')))
    assert.equal(r.stderr, '', '"quiet": true from the file silenced the progress lines')
  })

  test('an environment variable wins over the file; lists and switches come from the file', async (t) => {
    const store = join(dir, 'store-env')
    mkdirSync(store)
    await runJson(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key')])
    const server = await startServe(store, ['--token', 'right-token'])
    t.after(() => server.stop())
    const replica = join(dir, 'replica')
    const config = file('replica.json', { pull: { from: server.url, target: replica, pubkey: [join(keys, 'snapshot.pub')], swap: true, token: 'wrong-token', retries: 0 } })
    const r = await runJson<{ action: string }>(['pull', '--config', config], { env: { SNAPSHOT_TOKEN: 'right-token' } })
    assert.equal(r.action, 'swapped')
    assert.deepEqual(treeDiff(source, replica), [])
  })

  test('a missing required option is still a usage error', async () => {
    const r = await runCli(['build', '--config', file('half.json', { store: join(dir, 'nowhere') })])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /required option '--source <dir>' not specified/)
    const plain = await runCli(['build', '--store', join(dir, 'nowhere')])
    assert.equal(plain.code, 2)
    assert.match(plain.stderr, /required option '--source <dir>' not specified/)
  })

  test('an unknown key is a usage error that names it', async () => {
    const config = file('typo.json', { source, stroe: '/x', build: { 'max-chian': 3 } })
    const r = await runCli(['build', '--config', config, '--store', join(dir, 'nowhere')])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /typo\.json': unknown keys "stroe", "build\.max-chian"/)
  })

  test('a bad value fails as it would on the command line, naming the file and the key', async () => {
    const config = file('bad.json', { source, store: join(dir, 'nowhere'), build: { maxChain: 0 } })
    const r = await runCli(['build', '--config', config])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /option '--max-chain <n>' value '0' from config file '.*bad\.json' \(key "build\.maxChain"\) is invalid\. --max-chain takes a whole number from 1 to 100000, not '0'/)
    const cron = await runCli(['build', '--config', file('cron.json', { source, store: join(dir, 'nowhere'), cron: 'hourly please' })])
    assert.equal(cron.code, 2)
    assert.match(cron.stderr, /option '--cron <expr>' value 'hourly please' from config file .* is not a cron expression/)
    const sw = await runCli(['build', '--config', file('switch.json', { source, store: join(dir, 'nowhere'), full: 'yes' })])
    assert.equal(sw.code, 2)
    assert.match(sw.stderr, /option '--full' is a switch: config file .* \(key "full"\) must be true or false/)
  })

  test('a file that is missing or not JSON is a usage error', async () => {
    const missing = await runCli(['build', '--config', join(dir, 'no-such.json')])
    assert.equal(missing.code, 2)
    assert.match(missing.stderr, /cannot read config file '.*no-such\.json'/)
    const broken = await runCli(['build', '--config', file('broken.json', '{"source": ')])
    assert.equal(broken.code, 2)
    assert.match(broken.stderr, /config file '.*broken\.json' is not valid JSON/)
  })
})
