/**
 * Path rules shared by build (what we agree to publish) and pull (what we agree to write).
 * One function each, so the master never publishes what a replica would refuse.
 */

/** Deeper trees are refused: a bound against hostile archives, far above real playlist trees. */
export const MAX_DEPTH = 256
/** Linux NAME_MAX, in bytes. */
export const MAX_NAME_BYTES = 255
/** Linux PATH_MAX less room for the replica's own prefix. */
export const MAX_PATH_BYTES = 3800

/**
 * Why a relative tree path (a byte string, byte-path.ts) is unacceptable, or null when it is fine.
 * Any byte but NUL and '/' is legal in a name, as on Linux: backslashes, newlines and bytes that
 * are not UTF-8 included. Runs for every entry of every scan (a million per build), so the common
 * case is one pass over the bytes; the rare problems are then told apart by the slow, plain checks.
 */
export function pathProblem(path: string): string | null {
  const n = path.length
  let suspect = n === 0 || n > MAX_PATH_BYTES
  let depth = 1
  let segStart = 0
  for (let i = 0; i <= n && !suspect; i++) {
    const c = i < n ? path.charCodeAt(i) : 47
    if (c === 47) {
      const len = i - segStart
      if (len === 0 || len > MAX_NAME_BYTES || (len <= 2 && path.charCodeAt(segStart) === 46 && (len === 1 || path.charCodeAt(segStart + 1) === 46))) suspect = true
      segStart = i + 1
      depth++
    } else if (c === 0 || c > 0xff) suspect = true
  }
  return suspect || depth > MAX_DEPTH ? slowPathProblem(path) : null
}

function slowPathProblem(path: string): string | null {
  if (path.length === 0) return 'empty path'
  if (path.includes('\0')) return 'NUL byte in path'
  if (/[^\x00-\xff]/.test(path)) return 'internal: not a byte string'
  if (path.startsWith('/')) return 'absolute path'
  if (path.length > MAX_PATH_BYTES) return `path longer than ${MAX_PATH_BYTES} bytes`
  const parts = path.split('/')
  if (parts.length > MAX_DEPTH) return `nested deeper than ${MAX_DEPTH} levels`
  for (const part of parts) {
    if (part === '' || part === '.' || part === '..') return `'${part || '//'}' segment`
    if (part.length > MAX_NAME_BYTES) return `a name longer than ${MAX_NAME_BYTES} bytes`
  }
  return null
}

export function parentOf(path: string): string {
  const slash = path.lastIndexOf('/')
  return slash < 0 ? '' : path.slice(0, slash)
}

export function depthOf(path: string): number {
  let depth = 1
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 47) depth++
  return depth
}

/** Linux refuses longer symlink targets (PATH_MAX less the NUL). */
export const MAX_LINK_TARGET_BYTES = 4095

/**
 * Why a symlink target (a byte string) cannot be carried, or null. Targets are carried verbatim,
 * whatever they point to (absolute, outside the tree, dangling, a loop), as tar and rsync -a do:
 * a link is never followed, neither when building nor when applying (apply-archive.ts writes only
 * through directories it has proven real), so where it points is the reader's business.
 */
export function linkTargetProblem(target: string): string | null {
  if (target.length === 0) return 'empty symlink target'
  if (target.includes('\0')) return 'NUL byte in symlink target'
  if (/[^\x00-\xff]/.test(target)) return 'internal: not a byte string'
  if (target.length > MAX_LINK_TARGET_BYTES) return `symlink target longer than ${MAX_LINK_TARGET_BYTES} bytes`
  return null
}
