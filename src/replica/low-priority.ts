import { getPriority, setPriority } from 'node:os'

/**
 * Runs work that is off a pull's critical path (the spare tree's catch-up after the swap) at the
 * lowest CPU priority, so that it yields to what matters on a replica: the server reading the
 * live tree, and, where several replicas share a machine, the other pulls before their swaps.
 * On Linux the priority is the calling thread's: the one that writes the tree. Lowering is always
 * allowed, but an unprivileged process may not raise it back, so a caller that goes on running
 * (`pull --cron`) asks for it only when it runs as root.
 */
export async function atLowPriority<T>(enabled: boolean, work: () => Promise<T>): Promise<T> {
  let before: number | null = null
  if (enabled) {
    try {
      before = getPriority()
      setPriority(19)
    } catch {
      before = null // not allowed here: the work runs as it would have
    }
  }
  try {
    return await work()
  } finally {
    if (before !== null) {
      try {
        setPriority(before)
      } catch {
        // Not allowed to raise it back: the caller asked only where that does not matter.
      }
    }
  }
}
