import { readFileSync } from 'node:fs'
import { Command, CommanderError } from '@commander-js/extra-typings'
import { zstdBackend, zstdSetting } from '../archive/zstd-codec.js'
import { parseRate } from '../store/rate-limit.js'
import { ExitCode, SnapshotError } from '../core/errors.js'
import { buildCommand } from './build-command.js'
import { withConfigFiles } from './config-file.js'
import { keygenCommand } from './keygen-command.js'
import { registerListCommand } from './list-command.js'
import { registerMirrorCommand } from './mirror-command.js'
import { registerPruneCommand } from './prune-command.js'
import { addS3Options, addSourceS3Options, registerPublishCommand } from './publish-command.js'
import { registerRollbackCommand } from './rollback-command.js'
import { registerVerifyCommand } from './verify-command.js'
import { makeOutput } from './output.js'
import { metricsFileOption, metricsListenOption } from './metrics-options.js'
import { registerFleetCommand } from './fleet-command.js'
import { checked, collect, wholeNumber } from './option-parsers.js'
import { pullCommand } from './pull-command.js'
import { DEFAULT_WRITER_THREADS } from '../restore/file-writers.js'
import { DEFAULT_READER_THREADS } from '../master/read-ahead.js'
import { DEFAULT_SCAN_PROCESSES } from '../fs/tree-scan.js'
import { serveCommand } from './serve-command.js'
import { statusCommand, unpinCommand } from './replica-commands.js'
import { swapCommand } from './swap-command.js'
import { cronOption, fullRatioOption, graceOption, jitterOption, jsonOption, maxAgeOption, maxChainOption, pubkeyOption, quietOption, stateOption, targetOption, timezoneOption, tokenOption, treesOption, waitOption } from './common-options.js'

/**
 * The entry point: parses flags, runs one command, and maps errors to the documented exit codes
 * (bin/snapshot sets the process's exit code from what main returns; nothing else exits).
 */
export function makeProgram(): Command {
  const program = new Command('snapshot')
    .description('Distribute a tree of millions of tiny files: build hourly snapshots on a master, pull --swap them on replicas over HTTP.')
    .version(versionLine())
    .showHelpAfterError()
    .exitOverride()

  program
    .command('keygen')
    .description('Create an ed25519 key pair for signing snapshots: DIR/snapshot.key (0600) and DIR/snapshot.pub.')
    .requiredOption('--out <dir>', 'directory for the two key files (keep it outside the store)')
    .option('--force', 'replace an existing key pair')
    .addOption(jsonOption())
    .addOption(quietOption())
    .action(async (o) => keygenCommand(o, makeOutput(o)))

  const build = program
    .command('build')
    .description('Snapshot the source tree into the store: a delta against the latest snapshot, plus a full archive when the policy says so. An unchanged tree makes no snapshot.')
    .requiredOption('--source <dir>', 'the tree to publish')
    .requiredOption('--store <dir>', 'the store directory (static files: serve it with `snapshot serve`, a web server, a CDN)')
    .option('--key <file>', 'ed25519 private key (from `snapshot keygen`) that signs the snapshot')
    .option('--full', 'write a full archive whatever the policy says')
    .addOption(fullRatioOption())
    .addOption(maxChainOption())
    .option('--keep <n>', 'after each build, prune to the N most recent snapshots (see `snapshot prune`); default: keep all', wholeNumber('--keep', 1, 1_000_000))
    .addOption(graceOption('with --keep: leave what a pull in progress may still fetch for this long'))
    .addOption(cronOption('keep running and build on this cron schedule (an optional 6th, leading field is seconds); builds once at start and at once after a missed run'))
    .addOption(timezoneOption())
    .addOption(jitterOption('with --cron: wait a random 0 to N seconds before each scheduled build'))
    .option('--readers <n>', 'threads reading the source files a build packs, ahead of the packing (0: the build\'s own thread reads them)', wholeNumber('--readers', 0, 64), DEFAULT_READER_THREADS)
    .option('--scanners <n>', 'find processes walking the source tree at once (1: a single find; more need GNU find 4.9 or later)', wholeNumber('--scanners', 1, 64), DEFAULT_SCAN_PROCESSES)
    .option('--strict', 'fail (exit 17, nothing published) when any entry would be skipped: vanished, special, or a name or link replicas refuse')
    .addOption(waitOption('wait this long for another build, prune or rollback holding the store\'s lock'))
    .option('--publish <s3url>', 'after each build, publish the store to s3://BUCKET/PREFIX (see `snapshot publish`; the S3 options below apply)')
    .addOption(jsonOption('print one JSON object (id, kind, counts, sizes, skipped)'))
    .addOption(quietOption())
    .addOption(metricsListenOption())
    .addOption(metricsFileOption())
  addS3Options(build).action(async (o) => buildCommand({ ...o, maxChain: o.maxChain, fullRatio: o.fullRatio }, makeOutput(o)))

  program
    .command('serve')
    .description('Serve a store over HTTP (GET and HEAD, Range, ETag): objects cached forever, the pointer never.')
    .requiredOption('--store <dir>', 'the store directory')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port (0: any free port)', wholeNumber('--port', 0, 65535), 8080)
    .addOption(tokenOption('require "Authorization: Bearer <token>"'))
    .option('--header-timeout <seconds>', 'drop a client that has not sent its whole request head within this time', wholeNumber('--header-timeout', 1, 3600), 10)
    .option('--idle-timeout <seconds>', 'drop a connection with no traffic either way for this long (a stalled download)', wholeNumber('--idle-timeout', 1, 86400), 30)
    .addOption(jsonOption('print the URL as JSON'))
    .addOption(quietOption('no request log on stderr'))
    .addOption(metricsListenOption('serve Prometheus metrics (requests and bytes by status) at /metrics on this address; a bare :PORT or PORT is 127.0.0.1'))
    .action(async (o) => serveCommand(o, makeOutput(o)))

  const pull = program
    .command('pull')
    .description('Bring a replica up to the store\'s latest snapshot: fetch what it lacks, build the new tree beside the live one, verify, flush, and with --swap switch atomically.')
    .option('--from <url|dir>', 'the store: an http(s):// or s3://BUCKET/PREFIX URL, or a local directory; repeat for mirrors (the newest valid pointer wins, a mirror that is down or stale is skipped)', collect, [] as string[])
    .requiredOption('--target <path>', 'the live path: a symlink that snapshot manages (it must not exist yet, or be one it made)')
    .addOption(pubkeyOption('trusted ed25519 public key; repeat during a key rotation'))
    .option('--swap', 'make the new snapshot live at once (otherwise it is only staged: see `snapshot swap`)')
    .addOption(stateOption('where trees and downloads live (default: .NAME.snapshot beside the target)'))
    .addOption(treesOption('trees to keep: the live one, the previous one (instant rollback), and from 3 a spare, caught up after each swap, so the next pull applies one hour of change, not two (with 2, a new replica\'s second tree is filled after its first swap)'))
    .addOption(tokenOption())
    .option('--retries <n>', 'retries of a failed download, with backoff', wholeNumber('--retries', 0, 100), 5)
    .option('--timeout <seconds>', 'connect timeout, and how long a download may stall', wholeNumber('--timeout', 1, 3600), 30)
    .option('--limit-rate <rate>', 'download at most this many bytes per second over the whole pull, e.g. 500k, 10M, 1.5M (k, M, G: 1024, 1024², 1024³; at least 16k)', checked(parseRate))
    .option('--writers <n>', 'threads writing the small files of a tree at once (0: the pull\'s own thread writes them)', wholeNumber('--writers', 0, 64), DEFAULT_WRITER_THREADS)
    .addOption(waitOption('wait this long for another pull on the same target to finish'))
    .option('--unpin', 'clear the pin a rollback left, then pull as usual')
    .option('--max-delete <percent>', 'refuse to swap in a snapshot that deletes more than this share of the live entries', wholeNumber('--max-delete', 0, 100), 20)
    .option('--force', 'swap even when the mass-deletion guard trips')
    .option('--pre-swap <command>', 'health check run (sh -c) before the swap; a non-zero exit vetoes it (env: SNAPSHOT_ID, SNAPSHOT_TREE, SNAPSHOT_TARGET)')
    .option('--post-swap <command>', 'command run (sh -c) after a successful swap, e.g. a web server reload')
    .option('--hook-timeout <seconds>', 'kill a hook that runs longer', wholeNumber('--hook-timeout', 1, 86400), 300)
    .addOption(maxAgeOption('exit 13 when the store\'s newest snapshot is older than this (a frozen mirror or a stopped master); 0: never'))
    .addOption(cronOption('keep running and pull on this cron schedule (an optional 6th, leading field is seconds); pulls once at start and at once after a missed run'))
    .addOption(timezoneOption())
    .addOption(jitterOption('with --cron: wait a random 0 to N seconds before each scheduled pull, so replicas spread their requests'))
    .option('--watch', 'keep running and pull each new snapshot as soon as it is published (long-poll against `snapshot serve`, else a conditional request every --interval)')
    .option('--interval <seconds>', 'with --watch: seconds between checks of a store that does not long-poll', wholeNumber('--interval', 1, 86400), 5)
    .option('--long-poll <seconds>', 'with --watch: how long `snapshot serve` may hold a check until a new snapshot is published; 0: plain polling', wholeNumber('--long-poll', 0, 3600), 30)
    .option('--max-backoff <seconds>', 'with --watch: cap of the retry delay while the store is unreachable or pulls fail', wholeNumber('--max-backoff', 1, 86400), 15)
    .addOption(jsonOption('print one JSON object (with --cron or --watch: one per pull)'))
    .addOption(quietOption())
    .addOption(metricsListenOption())
    .addOption(metricsFileOption())
  addSourceS3Options(pull).action(async (o) => pullCommand(o, makeOutput(o)))

  program
    .command('swap')
    .description('Make the snapshot that `pull` staged go live, atomically.')
    .addOption(targetOption('the live path'))
    .addOption(stateOption())
    .addOption(treesOption())
    .addOption(waitOption())
    .addOption(jsonOption())
    .addOption(quietOption())
    .action(async (o) => swapCommand(o, makeOutput(o)))

  registerReplicaCommands(program)
  registerListCommand(program)
  registerVerifyCommand(program)
  registerPruneCommand(program)
  registerRollbackCommand(program)
  registerPublishCommand(program)
  registerFleetCommand(program)
  registerMirrorCommand(program)
  // More commands register themselves here, one line each (see the register* functions).
  return withConfigFiles(program) // last: it gives --config to every command registered above
}

/**
 * `snapshot --version`: the package's version (from its package.json, two levels above dist/src),
 * the Node that runs it and the zstd backend in use, which decides the speed of builds and pulls.
 */
export function versionLine(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { name: string; version: string }
  let zstd: string
  try {
    zstd = zstdSetting(zstdBackend())
  } catch (err) {
    zstd = `none (${(err as Error).message})` // a bad SNAPSHOT_ZSTD: the version still prints
  }
  return `${pkg.name} ${pkg.version} (node ${process.version}, zstd: ${zstd})`
}

/** Options every replica-side command shares. */
function replicaCommand(program: Command, name: string, description: string) {
  const cmd = program
    .command(name)
    .description(description)
    .addOption(targetOption())
    .addOption(stateOption())
    .addOption(treesOption())
    .option('--from <url|dir>', 'the store, when it must be asked (http(s)://, s3://, or a directory); repeat for mirrors', collect, [] as string[])
    .addOption(pubkeyOption())
    .addOption(tokenOption())
    .addOption(waitOption())
    .addOption(jsonOption())
    .addOption(quietOption())
  return addSourceS3Options(cmd)
}

function registerReplicaCommands(program: Command): void {
  replicaCommand(program, 'unpin', 'Let pulls move a replica that a rollback pinned.').action(async (o) => unpinCommand(o, makeOutput(o)))
  replicaCommand(program, 'status', 'What a replica serves and since when, staged and pinned snapshots, the last pull, and (with --from) its lag behind the store. Exit 13 when the newest snapshot seen is older than --max-age.')
    .addOption(maxAgeOption('exit 13 when the newest snapshot seen is older than this; 0: never'))
    .action(async (o) => statusCommand(o, makeOutput(o)))
}

export async function main(argv: string[]): Promise<number> {
  const program = makeProgram()
  try {
    await program.parseAsync(argv)
    return ExitCode.Ok
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version end "with an error" in commander's terms; they are a success for us.
      return err.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage
    }
    if (err instanceof SnapshotError) {
      process.stderr.write(`snapshot: error [${err.code}]: ${err.message}\n`)
      return err.exitCode
    }
    const e = err as NodeJS.ErrnoException
    if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
      process.stderr.write(`snapshot: error [ERR_NO_SPACE]: the disk is full: ${e.message}\n`)
      return ExitCode.NoSpace
    }
    process.stderr.write(`snapshot: error: ${e?.stack ?? String(err)}\n`)
    return ExitCode.Failure
  }
}

