/**
 * got, loaded by the first request a process makes rather than by every command at start: with
 * its dependencies it is ~30 modules that a build, a status or a swap never use (measured in
 * BENCHMARKS.md, "What starting a command costs").
 */
let loading: Promise<typeof import('got').default> | undefined

export function loadGot(): Promise<typeof import('got').default> {
  loading ??= import('got').then((m) => m.default)
  return loading
}
