import { readFile } from 'node:fs/promises'
import { Option, type CommandUnknownOpts } from '@commander-js/extra-typings'
import { ExitCode } from '../core/errors.js'

/**
 * `--config FILE` on every command: a JSON object whose keys are long option names, in kebab-case
 * or camelCase, optionally in sections named after commands:
 *
 *   { "store": "/var/lib/snapshot/store", "build": { "source": "/srv/playlists", "cron": "0 * * * *" } }
 *
 * A command takes the top-level keys it knows, then its own section over them. A top-level key
 * that only another command knows is left to that command (one file can serve build and serve);
 * a key no command knows is a usage error. Precedence: flags > environment variables > the file >
 * defaults. File values go through each option's own parser, so a bad value fails as it would on
 * the command line, naming the file.
 */

/** command name -> config key (both spellings) -> the option's long flag */
export type KnownKeys = Map<string, Map<string, string>>

export interface ConfigSelection {
  /** long flag -> the key it came from ("cron" or "build.cron") and its JSON value */
  values: Map<string, { key: string; value: unknown }>
  unknown: string[]
  duplicates: string[]
}

export function parseConfigText(text: string): Record<string, unknown> {
  let parsed: unknown
  try {
    parsed = JSON.parse(text.replace(/^\uFEFF/, ''))
  } catch (err) {
    throw new Error(`is not valid JSON: ${(err as Error).message}`)
  }
  if (!isObject(parsed)) throw new Error('must hold one JSON object ({"option": value, ...})')
  return parsed
}

/** The keys a config file may use for an option: its long name in kebab-case and in camelCase. */
export function configKeys(longFlag: string): string[] {
  const kebab = longFlag.replace(/^--/, '')
  const camel = kebab.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())
  return camel === kebab ? [kebab] : [kebab, camel]
}

/** Pure: the values of the file that apply to `command`, plus what is wrong with the file. */
export function selectConfigValues(config: Record<string, unknown>, command: string, known: KnownKeys): ConfigSelection {
  const mine = known.get(command)
  const top = new Map<string, { key: string; value: unknown }>()
  const section = new Map<string, { key: string; value: unknown }>()
  const unknown: string[] = []
  const duplicates: string[] = []
  const put = (into: Map<string, { key: string; value: unknown }>, flag: string, key: string, value: unknown): void => {
    const before = into.get(flag)
    if (before) duplicates.push(`"${before.key}" and "${key}"`)
    else into.set(flag, { key, value })
  }
  for (const [key, value] of Object.entries(config)) {
    const sectionKeys = known.get(key)
    if (sectionKeys && isObject(value)) {
      for (const [inner, innerValue] of Object.entries(value)) {
        const flag = sectionKeys.get(inner)
        if (flag === undefined) unknown.push(`${key}.${inner}`)
        else if (key === command) put(section, flag, `${key}.${inner}`, innerValue)
      }
      continue
    }
    const flag = mine?.get(key)
    if (flag !== undefined) put(top, flag, key, value)
    else if (![...known.values()].some((keys) => keys.has(key))) unknown.push(key)
  }
  return { values: new Map([...top, ...section]), unknown, duplicates }
}

const mandatoryOptions = new WeakMap<CommandUnknownOpts, Option[]>()

/**
 * Adds `--config` to every command of `program`, and a preAction hook that merges the file.
 * Commander checks required options before any hook runs, so they are made optional here and
 * checked by the hook once the file is merged, with commander's own message. Call it last, once
 * every command is registered.
 */
export function withConfigFiles<T extends CommandUnknownOpts>(program: T): T {
  const known: KnownKeys = new Map()
  for (const cmd of program.commands) {
    if (!cmd.options.some((o) => o.long === '--config')) {
      cmd.addOption(new Option('--config <file>', 'read options from this JSON file (flags and environment variables win over it)'))
    }
    const mandatory = cmd.options.filter((o) => o.mandatory)
    for (const o of mandatory) o.makeOptionMandatory(false)
    mandatoryOptions.set(cmd, mandatory)
    const keys = known.get(cmd.name()) ?? new Map<string, string>() // shared if two commands share a name
    for (const o of cmd.options) {
      if (!o.long || o.long === '--config') continue
      for (const k of configKeys(o.long)) keys.set(k, o.long)
    }
    known.set(cmd.name(), keys)
  }
  program.hook('preAction', async (_program, actionCommand) => {
    await applyConfigFile(actionCommand, known)
  })
  return program
}

async function applyConfigFile(cmd: CommandUnknownOpts, known: KnownKeys): Promise<void> {
  const file = cmd.getOptionValue('config')
  if (typeof file === 'string') {
    let config: Record<string, unknown>
    try {
      config = parseConfigText(await readFile(file, 'utf8'))
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      usageError(cmd, e.code ? `cannot read config file '${file}': ${e.message}` : `config file '${file}' ${e.message}`)
    }
    const sel = selectConfigValues(config, cmd.name(), known)
    if (sel.unknown.length > 0) {
      const takes = [...new Set(known.get(cmd.name())?.values())].map((f) => f.slice(2)).join(', ')
      usageError(cmd, `config file '${file}': unknown key${sel.unknown.length > 1 ? 's' : ''} ${sel.unknown.map((k) => `"${k}"`).join(', ')} (${cmd.name()} takes: ${takes})`)
    }
    if (sel.duplicates.length > 0) usageError(cmd, `config file '${file}': the same option twice: ${sel.duplicates.join(', ')}`)
    for (const [flag, { key, value }] of sel.values) {
      const option = cmd.options.find((o) => o.long === flag)
      if (!option) continue
      const name = option.attributeName()
      const source = cmd.getOptionValueSource(name)
      if (source !== undefined && source !== 'default') continue // a flag or an environment variable wins
      cmd.setOptionValueWithSource(name, optionValue(cmd, option, value, `config file '${file}' (key "${key}")`), 'config')
    }
  }
  for (const option of mandatoryOptions.get(cmd) ?? []) {
    if (cmd.getOptionValue(option.attributeName()) === undefined) {
      cmd.error(`error: required option '${option.flags}' not specified`, { exitCode: ExitCode.Usage, code: 'commander.missingMandatoryOptionValue' })
    }
  }
}

/** Turns a JSON value into what the option would hold had it been given on the command line. */
function optionValue(cmd: CommandUnknownOpts, option: Option, value: unknown, where: string): unknown {
  if (!option.required && !option.optional) {
    if (typeof value !== 'boolean') usageError(cmd, `option '${option.flags}' is a switch: ${where} must be true or false, not ${JSON.stringify(value)}`)
    return option.negate ? !value : value
  }
  if (option.optional && value === true) return option.presetArg ?? true
  const list = Array.isArray(value)
  if (list && !option.variadic && !Array.isArray(option.defaultValue)) usageError(cmd, `option '${option.flags}' takes one value: ${where} is a list`)
  let result: unknown = option.defaultValue
  for (const item of list ? (value as unknown[]) : [value]) {
    if (typeof item !== 'string' && typeof item !== 'number') {
      usageError(cmd, `option '${option.flags}' takes ${list ? 'strings or numbers' : 'a string or a number'}: ${where} holds ${JSON.stringify(item)}`)
    }
    const text = String(item)
    if (option.parseArg) {
      try {
        result = option.parseArg(text, result)
      } catch (err) {
        usageError(cmd, `option '${option.flags}' value '${text}' from ${where} is invalid. ${(err as Error).message}`)
      }
    } else if (option.variadic) {
      result = [...(Array.isArray(result) && result !== option.defaultValue ? result : []), text]
    } else {
      result = text
    }
  }
  return result
}

/** Fails like commander's own usage errors (message, help, exit code 2). */
function usageError(cmd: CommandUnknownOpts, message: string): never {
  cmd.error(`error: ${message}`, { exitCode: ExitCode.Usage, code: 'commander.configFile' })
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
