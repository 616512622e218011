import { InvalidArgumentError } from '@commander-js/extra-typings'
import { parseWholeNumber } from './output.js'

/** Commander argument parsers shared by every command: a bad value is a usage error (exit 2). */

/** Makes a checker that throws a plain Error into an option parser that commander reports. */
export function checked<T>(check: (value: string) => T) {
  return (value: string): T => {
    try {
      return check(value)
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message)
    }
  }
}

export function wholeNumber(name: string, min: number, max: number) {
  return checked(parseWholeNumber(name, min, max))
}

export function ratio(value: string): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`takes a positive number, not '${value}'`)
  return n
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}
