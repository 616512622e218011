import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * Whether the module at `moduleUrl` is the script node was asked to run (rather than imported).
 * Both sides resolved: node resolves symlinks for import.meta.url, so run through a symlinked
 * checkout a plain comparison said no and the script exited 0 having done nothing.
 */
export function isRunAsMain(moduleUrl: string): boolean {
  const script = process.argv[1]
  if (script === undefined) return false
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(moduleUrl))
  } catch {
    return false
  }
}
