/**
 * Runs `work` over `items` with at most `limit` at once. The first failure stops new work from
 * starting, waits for what is running, then throws: a publish must not go on to the pointer
 * after an object failed, nor leave uploads running behind its back.
 */
export async function forEachBounded<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  let failure: { err: unknown } | null = null
  const worker = async (): Promise<void> => {
    while (failure === null && next < items.length) {
      const item = items[next++]!
      try {
        await work(item)
      } catch (err) {
        failure ??= { err }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker))
  if (failure) throw (failure as { err: unknown }).err
}
