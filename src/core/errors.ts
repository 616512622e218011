/**
 * Typed errors. Every error a user can meet has a stable string `code`, a message they can act on,
 * an optional `cause`, and the process exit code the CLI maps it to. Library code never exits.
 */

/** Exit codes are a documented API (README "Exit codes"): append only, never renumber. */
export const ExitCode = {
  Ok: 0,
  Failure: 1,
  Usage: 2,
  VerifyFailed: 3,
  Network: 4,
  NoSpace: 5,
  Refused: 6,
  NoSnapshot: 10,
  Locked: 11,
  // 12 is reserved: it was `Pinned`, defined and never returned (a pinned replica's pull exits 0).
  // Never reuse it: a script may test for it.
  Stale: 13,
  GuardTripped: 14,
  HookVeto: 15,
  FleetProblem: 16,
  Skipped: 17,
} as const
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

export class SnapshotError extends Error {
  readonly code: string = 'ERR_SNAPSHOT'
  readonly exitCode: ExitCodeValue = ExitCode.Failure
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/** Bad flags or arguments: the user must change the command line. */
export class UsageError extends SnapshotError {
  override readonly code = 'ERR_USAGE'
  override readonly exitCode = ExitCode.Usage
}

/** Content that does not match what the signed pointer or manifest declares. */
export class VerifyError extends SnapshotError {
  override readonly code: string = 'ERR_VERIFY'
  override readonly exitCode = ExitCode.VerifyFailed
}

export class ChecksumMismatchError extends VerifyError {
  override readonly code = 'ERR_CHECKSUM'
  constructor(what: string, expected: string, actual: string) {
    super(`${what}: sha256 is ${actual}, the signed pointer says ${expected}`)
  }
}

export class LengthMismatchError extends VerifyError {
  override readonly code = 'ERR_LENGTH'
  constructor(what: string, expected: number, actual: number) {
    super(`${what}: ${actual} bytes, the signed pointer says ${expected}`)
  }
}

export class SignatureError extends VerifyError {
  override readonly code = 'ERR_SIGNATURE'
}

/** A hostile or malformed archive or manifest: refused before anything live changes. */
export class UnsafeArchiveError extends SnapshotError {
  override readonly code = 'ERR_UNSAFE_ARCHIVE'
  override readonly exitCode = ExitCode.Refused
}

/** A validly signed snapshot older than one this replica already had (rollback attack). */
export class RollbackRefusedError extends SnapshotError {
  override readonly code = 'ERR_ROLLBACK_REFUSED'
  override readonly exitCode = ExitCode.Refused
}

export class NetworkError extends SnapshotError {
  override readonly code = 'ERR_NETWORK'
  override readonly exitCode = ExitCode.Network
}

export class NoSpaceError extends SnapshotError {
  override readonly code = 'ERR_NO_SPACE'
  override readonly exitCode = ExitCode.NoSpace
}

export class NoSnapshotError extends SnapshotError {
  override readonly code = 'ERR_NO_SNAPSHOT'
  override readonly exitCode = ExitCode.NoSnapshot
}

export class LockedError extends SnapshotError {
  override readonly code = 'ERR_LOCKED'
  override readonly exitCode = ExitCode.Locked
}

/** Wraps ENOSPC/EDQUOT so the CLI can say "disk full" with its own exit code. */
export function asSnapshotError(err: unknown, context: string): SnapshotError {
  if (err instanceof SnapshotError) return err
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  const detail = err instanceof Error ? err.message : String(err)
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new NoSpaceError(`${context}: the disk is full (${detail})`, { cause: err })
  }
  return new SnapshotError(`${context}: ${detail}`, { cause: err })
}

/** A response or file bigger than the caller's cap (endless-data protection): refused unread. */
export class TooLargeError extends VerifyError {
  override readonly code = 'ERR_TOO_LARGE'
  constructor(what: string, maxBytes: number) {
    super(`${what}: more than ${maxBytes} bytes, refused (a sound store never serves this much here)`)
  }
}

/** A zstd stream that is corrupt or ends in the middle of a frame. */
export class CompressionError extends SnapshotError {
  override readonly code = 'ERR_ZSTD'
}

/** The mass-deletion guard: a snapshot would delete too much of the replica; --force overrides. */
export class GuardTrippedError extends SnapshotError {
  override readonly code = 'ERR_GUARD'
  override readonly exitCode = ExitCode.GuardTripped
}

/** The pre-swap hook (a health check) said no: the snapshot stays staged, nothing live changed. */
export class HookVetoError extends SnapshotError {
  override readonly code = 'ERR_HOOK_VETO'
  override readonly exitCode = ExitCode.HookVeto
}

/** The post-swap hook failed: the swap itself happened. */
export class HookFailedError extends SnapshotError {
  override readonly code = 'ERR_HOOK_FAILED'
}

/** The store's newest snapshot is older than the freshness bound: a frozen mirror, or a stopped master. */
export class StaleError extends SnapshotError {
  override readonly code = 'ERR_STALE'
  override readonly exitCode = ExitCode.Stale
}

/**
 * The replica's file system cannot hold a name the snapshot carries: a name longer than its
 * NAME_MAX, or bytes it refuses (a file system that insists on UTF-8 names, say). Nothing live
 * changes; the operator must put the replica's trees on a file system that holds Linux names.
 */
export class NameUnsupportedError extends SnapshotError {
  override readonly code = 'ERR_NAME_UNSUPPORTED'
}

/** `snapshot fleet`: a replica is unreachable, stale, lagging or pinned (each named in the report). */
export class FleetProblemError extends SnapshotError {
  override readonly code = 'ERR_FLEET'
  override readonly exitCode = ExitCode.FleetProblem
}

/** `build --strict`: the build would leave entries out of the snapshot; it publishes nothing. */
export class SkippedEntriesError extends SnapshotError {
  override readonly code = 'ERR_SKIPPED'
  override readonly exitCode = ExitCode.Skipped
}

/** An object the store's records name is not there (404, or no such file): pruned or lost. */
export class ObjectMissingError extends NetworkError {
  readonly objectMissing = true
}

/** The newest snapshot is older than its parent: the master's clock went backwards, not a frozen mirror. */
export class ClockSkewError extends SnapshotError {
  override readonly code = 'ERR_CLOCK_SKEW'
  override readonly exitCode = ExitCode.Stale
}

/** An index file of another version: not an error, the build reads the whole tree instead. */
export class IndexVersionError extends SnapshotError {
  override readonly code = 'ERR_INDEX_VERSION'
}

/** A source file changed while the snapshot was being written: nothing is published; build again. */
export class SourceChangedError extends SnapshotError {
  override readonly code = 'ERR_SOURCE_CHANGED'
}

/** A file that kept changing while it was read (fs/stable-read.ts): skipped as `changing`. */
export class FileChangingError extends SnapshotError {
  override readonly code = 'ERR_FILE_CHANGING'
}

/** A private key inside the directory we are about to publish: refuse rather than risk it. */
export class PrivateKeyInStoreError extends SnapshotError {
  override readonly code = 'ERR_PRIVATE_KEY_IN_STORE'
  override readonly exitCode = ExitCode.Refused
  constructor(file: string, why: string) {
    super(
      `refusing to serve the store: ${file} ${why}; move private keys out of the store directory ` +
        `(the master keeps its signing key outside what it publishes)`,
    )
  }
}

/** `snapshot verify --store` found problems: the first five named, the rest counted. */
export class StoreVerifyError extends VerifyError {
  override readonly code = 'ERR_STORE_VERIFY'
  constructor(store: string, problems: readonly { readonly path: string; readonly message: string }[]) {
    const shown = problems.slice(0, 5).map((p) => `${p.path}: ${p.message}`)
    const more = problems.length > shown.length ? `; and ${problems.length - shown.length} more` : ''
    super(`store ${store}: ${problems.length} problem${problems.length === 1 ? '' : 's'}: ${shown.join('; ')}${more}`)
  }
}
