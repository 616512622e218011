import { ExitCode, SnapshotError, type ExitCodeValue } from '../core/errors.js'

/**
 * The exit code a command ending with `err` has: the same mapping as `main()` in src/cli/main.ts
 * (a typed error's own code, a full disk 5, anything else 1), so that a metric says what the
 * process would have exited with.
 */
export function exitCodeOf(err: unknown): ExitCodeValue {
  if (err === null || err === undefined) return ExitCode.Ok
  if (err instanceof SnapshotError) return err.exitCode
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  if (code === 'ENOSPC' || code === 'EDQUOT') return ExitCode.NoSpace
  return ExitCode.Failure
}

const NAMES = new Map<number, string>(Object.entries(ExitCode).map(([name, code]) => [code, name.replace(/[A-Z]/g, (c, i: number) => (i > 0 ? '_' : '') + c.toLowerCase())]))

/** A label value for an exit code, from its name in ExitCode: 13 -> "stale", 3 -> "verify_failed". */
export function exitCodeName(code: number): string {
  return NAMES.get(code) ?? `exit_${code}`
}

/** The string code of an error (`ERR_SIGNATURE`), for a label or a status line. */
export function errorCodeOf(err: unknown): string {
  if (err instanceof SnapshotError) return err.code
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  if (code === 'ENOSPC' || code === 'EDQUOT') return 'ERR_NO_SPACE'
  return typeof code === 'string' ? code : 'ERR_UNKNOWN'
}

/** The exit codes that mean "refused to put this snapshot live" rather than "could not". */
export const REFUSAL_EXIT_CODES: ReadonlySet<number> = new Set([ExitCode.VerifyFailed, ExitCode.Refused, ExitCode.GuardTripped, ExitCode.HookVeto])
