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
 * Why a relative tree path is unacceptable, or null when it is fine. Runs for every entry of every
 * scan (a million per build), so the common case is one pass over the characters; the rare
 * problems are then told apart by the slow, plain checks.
 */
export function pathProblem(path: string): string | null {
  const n = path.length
  let suspect = n === 0 || n * 3 > MAX_PATH_BYTES // only long names and paths need byte counts
  let depth = 1
  let segStart = 0
  for (let i = 0; i <= n && !suspect; i++) {
    const c = i < n ? path.charCodeAt(i) : 47
    if (c === 47) {
      const len = i - segStart
      if (len === 0 || len * 3 > MAX_NAME_BYTES || (len <= 2 && path.charCodeAt(segStart) === 46 && (len === 1 || path.charCodeAt(segStart + 1) === 46))) suspect = true
      segStart = i + 1
      depth++
    } else if (c === 0 || c === 92 || c === 0xfffd) suspect = true
  }
  return suspect || depth > MAX_DEPTH ? slowPathProblem(path) : null
}

function slowPathProblem(path: string): string | null {
  if (path.length === 0) return 'empty path'
  if (path.includes('\0')) return 'NUL byte in path'
  if (path.startsWith('/')) return 'absolute path'
  if (path.includes('\\')) return 'backslash in path'
  if (path.includes('\uFFFD')) return 'name is not valid UTF-8'
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) return `path longer than ${MAX_PATH_BYTES} bytes`
  const parts = path.split('/')
  if (parts.length > MAX_DEPTH) return `nested deeper than ${MAX_DEPTH} levels`
  for (const part of parts) {
    if (part === '' || part === '.' || part === '..') return `'${part || '//'}' segment`
    if (Buffer.byteLength(part) > MAX_NAME_BYTES) return `a name longer than ${MAX_NAME_BYTES} bytes`
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

/**
 * Why a symlink target could lead outside the tree, or null when it cannot.
 * Sound without looking at the disk: '..' may only lead the target, where it climbs through the
 * link's own ancestors (real directories); after the first ordinary name only descent follows, and
 * every link met on the way obeys the same rule. 'a/../b' is refused because 'a' could be a link.
 */
export function linkTargetProblem(linkPath: string, target: string): string | null {
  if (target.length === 0) return 'empty symlink target'
  if (target.includes('\0')) return 'NUL byte in symlink target'
  // A target read as UTF-8 with bytes that are not would be published as U+FFFD, another target.
  if (target.includes('\uFFFD')) return 'symlink target is not valid UTF-8'
  if (target.startsWith('/')) return `absolute symlink target '${target}'`
  if (Buffer.byteLength(target) > MAX_PATH_BYTES) return 'symlink target too long'
  let climbs = 0
  let descended = false
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') {
      if (descended) return `symlink target '${target}' has '..' after a name`
      climbs++
    } else {
      descended = true
    }
  }
  const parentDepth = depthOf(linkPath) - 1
  if (climbs > parentDepth) return `symlink target '${target}' leaves the tree`
  return null
}
