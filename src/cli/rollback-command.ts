import type { Command } from '@commander-js/extra-typings'
import { UsageError } from '../core/errors.js'
import { replicaRollbackCommand } from './replica-commands.js'
import { describeRollback, fleetRollback } from '../master/fleet-rollback.js'
import { readPrivateKeyFile } from './keys.js'
import { makeOutput, type Output } from './output.js'
import { wholeNumber } from './option-parsers.js'
import { jsonOption, pubkeyOption, quietOption, stateOption, tokenOption, treesOption, waitOption } from './common-options.js'

export interface FleetRollbackCommandOptions {
  store: string
  to: number
  key?: string
  wait: number
  json?: boolean
}

/** `snapshot rollback --store DIR --to ID`: republishes ID's tree as a new, higher snapshot. */
export async function fleetRollbackCommand(opts: FleetRollbackCommandOptions, out: Output): Promise<void> {
  const privateKey = opts.key ? await readPrivateKeyFile(opts.key) : null
  const r = await fleetRollback({ store: opts.store, to: opts.to, privateKey, lockWaitMs: opts.wait * 1000, log: (l) => out.log(l) })
  out.result(r, [describeRollback(r), ...(r.created ? ['replicas converge with their next pull; the next build from the source publishes the source again: fix it first'] : [])])
}

/** `rollback --store --to ID` for the fleet; `rollback --target [--to ID]` for one replica. */
export function registerRollbackCommand(program: Command): void {
  program
    .command('rollback')
    .description('With --target: switch one replica back to its previous snapshot (or --to ID), atomically, and pin it. With --store: fleet rollback, publishing a new snapshot (a higher id) whose tree is snapshot ID\'s, which replicas reach through their normal pull.')
    .option('--store <dir>', 'fleet rollback: the store directory')
    .option('--target <path>', 'replica rollback: the live path of the replica')
    .option('--to <id>', 'the snapshot to go back to (replica: default the previous one it keeps)', wholeNumber('--to', 1, Number.MAX_SAFE_INTEGER))
    .option('--key <file>', 'fleet: ed25519 private key that signs the new snapshot (required when the store is signed)')
    .option('--from <url|dir>', 'replica: the store, to rebuild a snapshot no tree keeps')
    .addOption(pubkeyOption('replica: trusted ed25519 public key (repeatable)'))
    .addOption(stateOption('replica: the state directory (default: .NAME.snapshot beside the target)'))
    .addOption(treesOption('replica: trees kept (as given to pull)'))
    .addOption(tokenOption())
    .addOption(waitOption('wait this long for a build (store) or pull (replica) holding the lock'))
    .addOption(jsonOption())
    .addOption(quietOption())
    .action(async (o) => {
      if ((o.store === undefined) === (o.target === undefined)) throw new UsageError('rollback takes exactly one of --store DIR (the fleet) or --target PATH (one replica)')
      if (o.store !== undefined) {
        if (o.to === undefined) throw new UsageError('a fleet rollback needs --to ID')
        return fleetRollbackCommand({ ...o, store: o.store, to: o.to }, makeOutput(o))
      }
      return replicaRollbackCommand({ ...o, target: o.target! }, makeOutput(o))
    })
}
