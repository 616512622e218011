/**
 * A full collection now, where the process allows one (`bin/snapshot` runs node with
 * `--expose-gc`): called where a step has just dropped large buffers that V8 would otherwise
 * return only at its next major collection, seconds later and after the next step has grown.
 * A delta build at 1M files drops its index lookup tables (10 MiB) when the scan ends, and grows
 * again while the delta is packed (BENCHMARKS.md, "Delta build memory at 1M, again"). A collection
 * of a build's heap (~40 MiB) takes tens of milliseconds. Without the flag it does nothing.
 */
export function releaseMemory(): void {
  const gc = (globalThis as { gc?: () => void }).gc
  if (typeof gc === 'function') gc()
}
