import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { BIN } from './helpers/cli.js'

/**
 * bin/snapshot run as a program (as `snapshot` on the PATH, and systemd's units, run it) starts
 * node with a young generation of 2 x 2 MiB: 20-40 MiB of a delta build's peak (BENCHMARKS.md,
 * "Delta build memory, continued"). What node was given is read from inside the process it ran.
 */
test('bin/snapshot runs node with --max-semi-space-size=2 and --expose-gc, and passes every argument through', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-launcher-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const probe = join(dir, 'probe.mjs')
  writeFileSync(probe, `import v8 from 'node:v8'
process.on('exit', () => {
  const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')
  process.stderr.write('probe ' + JSON.stringify({ execArgv: process.execArgv, argv: process.argv.slice(2), young: young.space_size }) + '\\n')
})
`)
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { env: { ...process.env, NODE_OPTIONS: `--import=${probe}` }, encoding: 'utf8', timeout: 60_000 })
    const line = /^probe (.*)$/m.exec(r.stderr)
    assert.ok(line, `no probe line from ${cmd}: ${r.stderr}`)
    return { status: r.status, stdout: r.stdout, ...(JSON.parse(line[1]!) as { execArgv: string[]; argv: string[]; young: number }) }
  }

  const direct = run(BIN, ['--version', 'two words', ''])
  assert.deepEqual(direct.execArgv, ['--max-semi-space-size=2', '--expose-gc'])
  assert.deepEqual(direct.argv, ['--version', 'two words', ''], 'arguments pass through the shell line unchanged')
  assert.equal(direct.status, 0)
  assert.match(direct.stdout, /^playlist-snapshot /)
  assert.ok(direct.young <= 4 << 20, `young generation ${direct.young} bytes, expected at most 2 x 2 MiB`)

  // Through node, the shell line is a string and a comment: node's own defaults, and its flags, apply.
  const viaNode = run(process.execPath, ['--max-semi-space-size=8', BIN, '--version'])
  assert.deepEqual(viaNode.execArgv, ['--max-semi-space-size=8'])
  assert.equal(viaNode.status, 0)
})
