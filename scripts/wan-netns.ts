/**
 * The WAN benchmark's network: one namespace for the master and one per replica, each replica
 * joined to the master by its own veth pair (a point-to-point link), shaped to a round-trip time
 * and a rate each way. With sch_netem, netem does both on each end; without it (this machine's
 * kernel), `tbf` does the rate and wan-latency-proxy.ts, run per link in the master's namespace,
 * the delay.
 *
 * Names are unique per run (a random prefix), nothing is added to the root namespace, and
 * `destroy` (also run from an exit handler) kills what runs in the namespaces and deletes them.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'

export interface LinkSpec {
  rttMs: number
  rateMbit: number
}

export interface Replica {
  index: number
  ns: string
  /** The veth end in the master's namespace (its counters are the link's: tx = down, rx = up). */
  masterDev: string
  replicaDev: string
  masterAddr: string
  replicaAddr: string
}

export interface Topology {
  prefix: string
  masterNs: string
  replicas: Replica[]
  /** True when the kernel has netem: the delay is in the kernel, and the proxies add none. */
  netem: boolean
  link: LinkSpec
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

function inNs(ns: string, argv: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

/** argv that runs `argv` inside namespace `ns`. */
export function nsArgv(ns: string, argv: readonly string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv]
}

/** A prefix no other run uses: `wb` + 5 random base-32 characters (interface names stay under 16 bytes). */
export function uniquePrefix(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567'
  return `wb${Array.from(randomBytes(5), (b) => alphabet[b % 32]).join('')}`
}

/** Whether this kernel has sch_netem (tried on the loopback of a namespace of ours). */
function hasNetem(ns: string): boolean {
  try {
    inNs(ns, ['tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'])
    inNs(ns, ['tc', 'qdisc', 'del', 'dev', 'lo', 'root'])
    return true
  } catch {
    return false
  }
}

function shape(ns: string, dev: string, link: LinkSpec, netem: boolean): void {
  const rate = `${link.rateMbit}mbit`
  if (netem) {
    inNs(ns, ['tc', 'qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', `${link.rttMs / 2}ms`, 'rate', rate, 'limit', '100000'])
  } else {
    // burst above a GSO packet; latency bounds the queue (rate x 200 ms), so TCP sees drops, not bloat.
    inNs(ns, ['tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '200ms'])
  }
}

/** Creates the namespaces and links. On any failure, deletes what it made and throws. */
export function createTopology(replicas: number, link: LinkSpec, prefix = uniquePrefix()): Topology {
  if (replicas < 1 || replicas > 250) throw new Error('replicas: 1 to 250')
  const topo: Topology = { prefix, masterNs: `${prefix}-m`, replicas: [], netem: false, link }
  try {
    ip(['netns', 'add', topo.masterNs])
    inNs(topo.masterNs, ['ip', 'link', 'set', 'lo', 'up'])
    topo.netem = hasNetem(topo.masterNs)
    for (let i = 1; i <= replicas; i++) {
      const r: Replica = {
        index: i,
        ns: `${prefix}-r${i}`,
        masterDev: `${prefix}m${i}`,
        replicaDev: `${prefix}r${i}`,
        masterAddr: `10.77.${i}.1`,
        replicaAddr: `10.77.${i}.2`,
      }
      topo.replicas.push(r)
      ip(['netns', 'add', r.ns])
      inNs(r.ns, ['ip', 'link', 'set', 'lo', 'up'])
      ip(['link', 'add', r.masterDev, 'netns', topo.masterNs, 'type', 'veth', 'peer', 'name', r.replicaDev, 'netns', r.ns])
      inNs(topo.masterNs, ['ip', 'addr', 'add', `${r.masterAddr}/24`, 'dev', r.masterDev])
      inNs(r.ns, ['ip', 'addr', 'add', `${r.replicaAddr}/24`, 'dev', r.replicaDev])
      inNs(topo.masterNs, ['ip', 'link', 'set', r.masterDev, 'up'])
      inNs(r.ns, ['ip', 'link', 'set', r.replicaDev, 'up'])
      shape(topo.masterNs, r.masterDev, link, topo.netem)
      shape(r.ns, r.replicaDev, link, topo.netem)
    }
  } catch (err) {
    destroyTopology(topo.prefix)
    const e = err as { stderr?: Buffer | string; message?: string }
    throw new Error(`setting up the network namespaces failed: ${String(e.stderr ?? e.message ?? err).trim()}`, { cause: err })
  }
  return topo
}

/** Every namespace whose name starts with `${prefix}-`: processes in it killed, then deleted. Synchronous, for exit handlers. */
export function destroyTopology(prefix: string): void {
  for (const ns of namespacesOf(prefix)) {
    try {
      const pids = ip(['netns', 'pids', ns]).split(/\s+/).filter(Boolean)
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL')
        } catch {
          // already gone
        }
      }
    } catch {
      // the namespace may be half made
    }
    try {
      ip(['netns', 'del', ns])
    } catch {
      // gone already
    }
  }
}

export function namespacesOf(prefix: string): string[] {
  try {
    return ip(['netns', 'list'])
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(`${prefix}-`))
  } catch {
    return []
  }
}

/** Bytes through one link so far, from the master end's interface counters. */
export function linkBytes(topo: Topology, r: Replica): { down: number; up: number } {
  const read = (what: string): number => Number(inNs(topo.masterNs, ['cat', `/sys/class/net/${r.masterDev}/statistics/${what}`]).trim())
  return { down: read('tx_bytes'), up: read('rx_bytes') }
}
