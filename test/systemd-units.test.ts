import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { after, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { makeProgram } from '../src/cli/main.js'
import { BIN } from './helpers/cli.js'

/**
 * The service units in deploy/systemd/ are checked as systemd reads them: `systemd-analyze
 * verify` (no running systemd needed) must pass each with no diagnostic at all, since it reports
 * a misspelt key or a bad value as a warning and still exits 0. Broken copies must fail the same
 * check, so that it cannot pass vacuously. Then each unit's command line, with the config file it
 * names, is parsed by the real CLI, and what it writes is checked against its ReadWritePaths=.
 */
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const UNITS = join(REPO, 'deploy', 'systemd')
const work = mkdtempSync(join(tmpdir(), 'systemd-units-'))
after(() => rmSync(work, { recursive: true, force: true }))

// systemd resolves `ExecStart=snapshot ...` in a fixed list of directories and verify checks that
// it is there. In a private mount namespace (nothing changes outside it), the repository's own
// bin/snapshot is put in /usr/local/sbin, which is first in that list.
const fakeBin = join(work, 'bin')
mkdirSync(fakeBin)
symlinkSync(BIN, join(fakeBin, 'snapshot'))

function verify(unitFile: string): { ok: boolean; output: string } {
  const r = spawnSync(
    'unshare',
    ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$1" /usr/local/sbin && exec systemd-analyze verify "$2"', 'sh', fakeBin, unitFile],
    { cwd: dirname(unitFile), encoding: 'utf8', timeout: 60_000 },
  )
  if (r.error) throw new Error(`${r.error.message}: run scripts/test-deps.sh (systemd-analyze comes with Debian's systemd package)`)
  const output = `${r.stdout}${r.stderr}`.trim()
  if (/systemd-analyze: (not found|No such file)|mount: .*(permission|denied)/i.test(output)) {
    throw new Error(`cannot run systemd-analyze verify: ${output} (run scripts/test-deps.sh, as root)`)
  }
  return { ok: r.status === 0 && output === '', output }
}

const shipped = readdirSync(UNITS).filter((f) => /\.(service|timer)$/.test(f)).sort()

test('deploy/systemd ships the build (service + timer), serve and pull --watch units', () => {
  assert.deepEqual(shipped, ['snapshot-build.service', 'snapshot-build.timer', 'snapshot-mirror.service', 'snapshot-pull.service', 'snapshot-serve.service'])
})

for (const unit of shipped) {
  test(`systemd-analyze verify passes ${unit} without a warning`, () => {
    const r = verify(join(UNITS, unit))
    assert.ok(r.ok, r.output)
  })
}

test('systemd-analyze verify rejects broken copies of a unit: the check is not vacuous', () => {
  const good = readFileSync(join(UNITS, 'snapshot-pull.service'), 'utf8')
  const broken: Record<string, [string, string, RegExp]> = {
    'misspelt-key.service': ['ProtectSystem=strict', 'ProtectSystm=strict', /Unknown key 'ProtectSystm'/],
    'bad-value.service': ['Type=simple', 'Type=simpel', /Failed to parse service type/],
    'bad-sandbox-value.service': ['NoNewPrivileges=yes', 'NoNewPrivileges=sometimes', /Failed to parse boolean value, ignoring: sometimes/],
    'missing-command.service': ['ExecStart=snapshot pull', 'ExecStart=snapshot-missing pull', /snapshot-missing is not executable/],
  }
  const dir = join(work, 'broken')
  mkdirSync(dir)
  for (const [name, [from, to, expected]] of Object.entries(broken)) {
    assert.ok(good.includes(from), `${from} is not in snapshot-pull.service any more: update this test`)
    const file = join(dir, name)
    writeFileSync(file, good.replace(from, to))
    const r = verify(file)
    assert.equal(r.ok, false, `${name} passed verify`)
    assert.match(r.output, expected)
  }
  // The same copy unbroken passes in the same place: the failures above are the edits.
  writeFileSync(join(dir, 'unbroken.service'), good)
  assert.ok(verify(join(dir, 'unbroken.service')).ok)
})

/** `Key=value` lines of a unit, repeated keys in order. */
function unitKeys(unit: string): Map<string, string[]> {
  const keys = new Map<string, string[]>()
  for (const line of readFileSync(join(UNITS, unit), 'utf8').split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line)
    if (m) keys.set(m[1]!, [...(keys.get(m[1]!) ?? []), m[2]!])
  }
  return keys
}

/**
 * Parses a unit's ExecStart= with the real CLI (the config file it names swapped for the one
 * shipped beside the units), without running the command: returns the options it would run with.
 */
async function parsedExecStart(unit: string, credentials: string): Promise<{ command: string; opts: Record<string, unknown> }> {
  const [execStart] = unitKeys(unit).get('ExecStart') ?? []
  assert.ok(execStart, `${unit} has no ExecStart=`)
  const words = execStart.replace('${CREDENTIALS_DIRECTORY}', credentials).split(/\s+/)
  assert.equal(words[0], 'snapshot')
  const args = words.slice(1).map((w) => (w.startsWith('/etc/snapshot/') && w.endsWith('.json') ? join(UNITS, w.slice('/etc/snapshot/'.length)) : w))
  const program = makeProgram()
  let seen: { command: string; opts: Record<string, unknown> } | undefined
  for (const cmd of program.commands) {
    cmd.action(() => {
      seen = { command: cmd.name(), opts: cmd.opts() as Record<string, unknown> }
    })
  }
  try {
    await program.parseAsync(['node', 'snapshot', ...args])
  } catch (err) {
    assert.fail(`${unit}: \`snapshot ${words.slice(1).join(' ')}\` is refused by the CLI: ${(err as Error).message}`)
  }
  assert.ok(seen, `${unit}: no command ran`)
  return seen
}

function under(path: string, dirs: string[]): boolean {
  return dirs.some((d) => path === d || path.startsWith(`${d}/`))
}

test('the build unit: an hourly oneshot that writes only the store, with the key handed over by systemd', async () => {
  const unit = unitKeys('snapshot-build.service')
  assert.deepEqual(unit.get('Type'), ['oneshot'])
  assert.deepEqual(unitKeys('snapshot-build.timer').get('Persistent'), ['true'])
  const { command, opts } = await parsedExecStart('snapshot-build.service', '/run/credentials/snapshot-build.service')
  assert.equal(command, 'build')
  assert.equal(opts['key'], '/run/credentials/snapshot-build.service/snapshot.key')
  assert.ok(unit.get('LoadCredential')?.includes('snapshot.key:/etc/snapshot/snapshot.key'))
  assert.ok(under(String(opts['store']), unit.get('ReadWritePaths') ?? []), `the store ${String(opts['store'])} is not writable by the unit`)
  assert.equal(opts['cron'], undefined) // the timer schedules it
})

test('the serve unit: a dynamic user that writes nothing', async () => {
  const unit = unitKeys('snapshot-serve.service')
  assert.deepEqual(unit.get('DynamicUser'), ['yes'])
  assert.equal(unit.get('ReadWritePaths'), undefined)
  const { command, opts } = await parsedExecStart('snapshot-serve.service', '')
  assert.equal(command, 'serve')
  assert.equal(opts['store'], '/var/lib/snapshot/store')
  assert.equal(opts['host'], '0.0.0.0')
})

test('the replica unit: pull --watch --swap under its own user, writing only the target\'s directory', async () => {
  const unit = unitKeys('snapshot-pull.service')
  assert.deepEqual(unit.get('User'), ['snapshot-pull'])
  assert.deepEqual(unit.get('KillMode'), ['mixed'])
  const { command, opts } = await parsedExecStart('snapshot-pull.service', '')
  assert.equal(command, 'pull')
  assert.equal(opts['watch'], true, 'pull --watch (issue 14) must be known to the CLI')
  assert.equal(opts['swap'], true)
  assert.deepEqual(opts['pubkey'], ['/etc/snapshot/snapshot.pub'])
  // The swap renames a symlink in the target's parent; the trees live beside it.
  assert.ok(under(dirname(String(opts['target'])), unit.get('ReadWritePaths') ?? []), `the target's directory is not writable by the unit`)
})

test('the relay unit: mirror --watch under its own user, writing only the relay\'s directory; serve reads the same config', async () => {
  const unit = unitKeys('snapshot-mirror.service')
  assert.deepEqual(unit.get('User'), ['snapshot-relay'])
  assert.deepEqual(unit.get('KillMode'), ['mixed'])
  const { command, opts } = await parsedExecStart('snapshot-mirror.service', '')
  assert.equal(command, 'mirror')
  assert.equal(opts['watch'], true)
  assert.deepEqual(opts['pubkey'], ['/etc/snapshot/snapshot.pub'])
  assert.deepEqual(opts['from'], ['http://master.example:8080'])
  assert.ok(under(String(opts['to']), unit.get('ReadWritePaths') ?? []), `the relay ${String(opts['to'])} is not writable by the unit`)
  // snapshot-serve.service with a drop-in `--config /etc/snapshot/relay.json` serves what the relay writes
  const program = makeProgram()
  let served: Record<string, unknown> | undefined
  for (const cmd of program.commands) cmd.action(() => void (served = cmd.name() === 'serve' ? (cmd.opts() as Record<string, unknown>) : served))
  await program.parseAsync(['node', 'snapshot', 'serve', '--config', join(UNITS, 'relay.json')])
  assert.equal(served?.['store'], opts['to'])
})

test('every unit is sandboxed: strict read-only system, no new privileges, private /tmp, no home', () => {
  for (const unit of shipped.filter((u) => u.endsWith('.service'))) {
    const keys = unitKeys(unit)
    for (const [key, value] of [['ProtectSystem', 'strict'], ['NoNewPrivileges', 'yes'], ['PrivateTmp', 'yes'], ['ProtectHome', 'yes'], ['CapabilityBoundingSet', '']] as const) {
      assert.deepEqual(keys.get(key), [value], `${unit}: ${key}=${value}`)
    }
    assert.ok(keys.has('User') || keys.get('DynamicUser')?.[0] === 'yes', `${unit} runs as root`)
  }
})
