import { readFile } from 'node:fs/promises'
import { Counter, Gauge, type Registry } from 'prom-client'
import { writeFileAtomic } from '../fs/durable.js'

/**
 * `--metrics-file PATH` for one-shot commands: node_exporter's textfile collector reads `*.prom`
 * files from a directory, so the file is replaced atomically (it never sees half a file; our temp
 * file's name does not end in `.prom`).
 *
 * A process that runs once would start every counter at zero and forget the last success when it
 * fails, so each run first takes up the values the previous run wrote: counters go on from there,
 * and a gauge this run does not set (say, the last success's time after a failure) keeps its value.
 */
export async function seedFromMetricsFile(registry: Registry, path: string): Promise<void> {
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return ''
    throw err
  })
  seedFromExposition(registry, text)
}

export async function writeMetricsFile(registry: Registry, path: string): Promise<void> {
  await writeFileAtomic(path, await registry.metrics(), 0o644)
}

export interface Sample {
  readonly name: string
  readonly labels: Record<string, string>
  readonly value: number
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$/
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/y

/** Reads the samples of a text exposition (comments skipped, unreadable lines ignored). */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = SAMPLE.exec(line)
    if (!m) continue
    const labels: Record<string, string> = {}
    const body = m[2] ?? ''
    LABEL.lastIndex = 0
    let ok = true
    while (LABEL.lastIndex < body.length) {
      const l = LABEL.exec(body)
      if (!l) {
        ok = false
        break
      }
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
    }
    const value = Number(m[3])
    if (ok && !Number.isNaN(value)) out.push({ name: m[1]!, labels, value })
  }
  return out
}

export function seedFromExposition(registry: Registry, text: string): void {
  const samples = parseExposition(text)
  for (const metric of registry.getMetricsAsArray()) {
    const name = (metric as unknown as { name: string }).name
    for (const s of samples) {
      if (s.name !== name || !Number.isFinite(s.value)) continue
      try {
        if (metric instanceof Counter && s.value > 0) metric.inc(s.labels, s.value)
        else if (metric instanceof Gauge) metric.set(s.labels, s.value)
      } catch {
        // a label this version does not have: that series starts afresh
      }
    }
  }
}
