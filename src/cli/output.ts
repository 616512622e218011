/**
 * How commands talk: progress lines go to stderr (so stdout stays parseable), the result goes to
 * stdout, as one JSON object with --json or as a few plain lines otherwise.
 */
export interface Output {
  log(line: string): void
  result(json: object, human: string[]): void
}

export function makeOutput(opts: { json?: boolean; quiet?: boolean }): Output {
  const quiet = opts.quiet ?? false
  return {
    log(line) {
      if (!quiet) process.stderr.write(`snapshot: ${line}\n`)
    },
    result(json, human) {
      if (opts.json) process.stdout.write(JSON.stringify(json) + '\n')
      else for (const l of human) process.stdout.write(l + '\n')
    },
  }
}

export { formatBytes } from '../core/format-bytes.js' // where the CLI has always found it

export function parseWholeNumber(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new Error(`${name} takes a whole number from ${min} to ${max}, not '${value}'`)
    }
    return n
  }
}
