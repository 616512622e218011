import { DEFAULT_FULL_POLICY } from '../core/full-policy.js'
import { buildSnapshot } from '../master/build.js'
import { readPrivateKeyFile } from './keys.js'
import { formatBytes, type Output } from './output.js'

export interface BuildCommandOptions {
  source: string
  store: string
  key?: string
  full?: boolean
  json?: boolean
  fullRatio?: number
  maxChain?: number
}

export async function buildCommand(opts: BuildCommandOptions, out: Output): Promise<void> {
  const privateKey = opts.key ? await readPrivateKeyFile(opts.key) : null
  if (!privateKey) out.log('warning: no --key given: the snapshot is unsigned and replicas with --pubkey will refuse it')
  const r = await buildSnapshot({
    source: opts.source,
    store: opts.store,
    privateKey,
    forceFull: opts.full ?? false,
    policy: { deltaBytesRatio: opts.fullRatio ?? DEFAULT_FULL_POLICY.deltaBytesRatio, maxChain: opts.maxChain ?? DEFAULT_FULL_POLICY.maxChain },
    log: (l) => out.log(l),
  })
  const human = r.created
    ? [
        `snapshot ${r.id} (${r.kind}${r.parent !== null ? `, parent ${r.parent}` : ''}): ${r.changed} changed, ${r.deleted} deleted, ${r.filesRead} files read in ${r.seconds.toFixed(2)} s`,
        `tree: ${r.files} files, ${r.dirs} directories, ${r.links} symlinks, ${formatBytes(r.bytes)}`,
        ...(r.deltaBytes !== null ? [`delta: ${formatBytes(r.deltaBytes)}`] : []),
        ...(r.fullBytes !== null ? [`full: ${formatBytes(r.fullBytes)} (${r.fullReason})`] : []),
      ]
    : [`unchanged: the tree equals snapshot ${r.id}; no new snapshot (${r.seconds.toFixed(2)} s)`]
  out.result(r, human)
}
