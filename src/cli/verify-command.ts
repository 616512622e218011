import type { Command } from '@commander-js/extra-typings'
import { StoreVerifyError, UsageError } from '../core/errors.js'
import { verifyTargetCommand } from './replica-commands.js'
import { verifyStore } from '../master/verify-store.js'
import { readTrustedKeys } from './keys.js'
import { formatBytes, makeOutput, type Output } from './output.js'
import { jsonOption, pubkeyOption, quietOption, stateOption, tokenOption, treesOption } from './common-options.js'

export interface VerifyStoreCommandOptions {
  store: string
  pubkey: string[]
  json?: boolean
}

/** `snapshot verify --store`: prints the report, then fails with exit 3 if anything is wrong. */
export async function verifyStoreCommand(opts: VerifyStoreCommandOptions, out: Output): Promise<void> {
  const trust = await readTrustedKeys(opts.pubkey)
  if (!trust.checked) out.log('warning: no --pubkey given: signatures are not checked, only the structure, lengths and hashes')
  const r = await verifyStore({ store: opts.store, trust, log: (l) => out.log(l) })
  const summary = `${r.records} records, ${r.objects} objects (${formatBytes(r.bytes)} hashed), latest ${r.latest ?? 'none'}; signatures ${r.signaturesChecked ? 'checked' : 'not checked (no --pubkey): structure only'}`
  out.result(r, [
    ...r.problems.map((p) => `problem: ${p.path}: ${p.message}`),
    ...(r.unpublished.length ? [`note: unpublished records (a build in progress, or one that died): ${r.unpublished.join(', ')}`] : []),
    r.ok ? `ok: ${summary}` : `FAILED: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}; ${summary}`,
  ])
  if (!r.ok) throw new StoreVerifyError(opts.store, r.problems)
}

/** `verify --store` checks a store; `verify --target` checks a replica's live tree. */
export function registerVerifyCommand(program: Command): void {
  program
    .command('verify')
    .description('With --store: check every object any snapshot names (present, exact length, sha256), the signatures, and the pointer\'s chain. With --target: read the live tree of a replica and name every path that differs from its snapshot. Exit 3 if anything is wrong.')
    .option('--store <dir>', 'the store directory to check')
    .option('--target <path>', 'the live path of a replica to check')
    .addOption(pubkeyOption('trusted ed25519 public key: the pointer and every record must verify under it; repeat during a key rotation'))
    .option('--from <url|dir>', 'with --target: the store, to fetch archives and manifests the replica no longer keeps')
    .addOption(stateOption('with --target: the replica state directory (default: .NAME.snapshot beside the target)'))
    .addOption(treesOption('with --target: trees kept (as given to pull)'))
    .addOption(tokenOption())
    .addOption(jsonOption('print one JSON object (ok, problems, counts)'))
    .addOption(quietOption())
    .action(async (o) => {
      if ((o.store === undefined) === (o.target === undefined)) throw new UsageError('verify takes exactly one of --store DIR or --target PATH')
      if (o.store !== undefined) return verifyStoreCommand({ ...o, store: o.store }, makeOutput(o))
      return verifyTargetCommand({ ...o, target: o.target!, wait: 0 }, makeOutput(o))
    })
}
