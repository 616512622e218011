import type { Command } from '@commander-js/extra-typings'
import { stat } from 'node:fs/promises'
import { UsageError } from '../core/errors.js'
import { openSource } from '../store/open-source.js'
import { StoreClient } from '../store/store-client.js'
import { listStore, type ListedSnapshot } from '../store/store-list.js'
import { readTrustedKeys } from './keys.js'
import { formatBytes, makeOutput, type Output } from './output.js'
import { jsonOption, pubkeyOption, quietOption, tokenOption } from './common-options.js'

export interface ListCommandOptions {
  store?: string
  from?: string
  pubkey: string[]
  token?: string
  json?: boolean
}

/** `snapshot list`: one line per snapshot, oldest first, as a replica would see the store. */
export async function listCommand(opts: ListCommandOptions, out: Output): Promise<void> {
  if ((opts.store === undefined) === (opts.from === undefined)) throw new UsageError('give exactly one of --store DIR or --from URL')
  if (opts.store !== undefined && !(await stat(opts.store).catch(() => null))?.isDirectory()) throw new UsageError(`--store ${opts.store} is not a directory`)
  const trust = await readTrustedKeys(opts.pubkey)
  if (!trust.checked) out.log('warning: no --pubkey given: the pointer and records are not authenticated')
  const token = opts.token
  const listing = await listStore(new StoreClient(openSource((opts.store ?? opts.from)!, token ? { token } : {}), trust))
  const first = listing.snapshots[0]
  const pruned = first !== undefined && first.parent !== null
  out.result(listing, [
    `${'id'.padStart(8)}  kind   created                   ${'size'.padStart(10)}  ${'files'.padStart(9)}  ${'changes'.padStart(9)}`,
    ...listing.snapshots.map((s) => line(s, listing.latest)),
    ...(pruned ? [`(snapshots before ${first.id} were pruned)`] : []),
  ])
}

function line(s: ListedSnapshot, latest: number): string {
  const notes = [...(s.id === latest ? ['latest'] : []), ...(s.rollbackOf !== null ? [`rollback of ${s.rollbackOf}`] : [])]
  return [
    String(s.id).padStart(8),
    s.kind.padEnd(5),
    s.created.padEnd(24),
    formatBytes(s.size).padStart(10),
    String(s.files).padStart(9),
    (s.changes === null ? '-' : String(s.changes)).padStart(9),
    ...(notes.length ? [notes.join(', ')] : []),
  ].join('  ')
}

export function registerListCommand(program: Command): void {
  program
    .command('list')
    .description('List the snapshots a store offers: id, kind, time, size of its objects, files, changes.')
    .option('--store <dir>', 'a store directory')
    .option('--from <url>', 'a store over http(s) (or a directory), read as a replica reads it')
    .addOption(pubkeyOption('trusted ed25519 public key: the pointer and records must verify under it; repeat during a key rotation'))
    .addOption(tokenOption())
    .addOption(jsonOption('print one JSON object: { latest, snapshots: [...] }'))
    .addOption(quietOption())
    .action(async (o) => listCommand(o, makeOutput(o)))
}
