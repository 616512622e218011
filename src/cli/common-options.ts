import { Option } from '@commander-js/extra-typings'
import { DEFAULT_FULL_POLICY } from '../core/full-policy.js'
import { DEFAULT_MAX_AGE_SECONDS } from '../core/freshness.js'
import { DEFAULT_GRACE_SECONDS } from '../master/prune.js'
import { TREES } from '../replica/replica-layout.js'
import { checkCronExpression, checkTimezone } from '../schedule/scheduler.js'
import { checked, collect, ratio, wholeNumber } from './option-parsers.js'

/**
 * The options several commands share, declared once: the trust group (--pubkey, --token), the
 * replica group (--target, --state, --trees, --wait), the schedule group (--cron, --timezone,
 * --jitter) and the output group (--json, --quiet). Each is a commander Option, added with
 * `.addOption(...)`, so its type reaches the action. A command may say what the option means for
 * it (the description); the flag, its parser, its bounds and its default live only here, the
 * defaults taken from the core's constants.
 */

const TEN_YEARS = 10 * 365 * 86400
const ONE_DAY = 86400

// Trust

/** A trusted ed25519 public key; repeatable, so that a key rotation can trust two keys. */
export function pubkeyOption(description = 'trusted ed25519 public key (repeatable)') {
  return new Option('--pubkey <file>', description).argParser(collect).default([] as string[])
}

/** The bearer token, from the flag or from SNAPSHOT_TOKEN (commander reads the variable). */
export function tokenOption(description = 'send "Authorization: Bearer <token>"') {
  return new Option('--token <token>', description).env('SNAPSHOT_TOKEN')
}

// Replica

export function targetOption(description = 'the live path of the replica') {
  return new Option('--target <path>', description).makeOptionMandatory()
}

export function stateOption(description = 'the replica state directory (default: .NAME.snapshot beside the target)') {
  return new Option('--state <dir>', description)
}

export function treesOption(description = 'trees kept (as given to pull)') {
  return new Option('--trees <n>', description).argParser(wholeNumber('--trees', TREES.min, TREES.max)).default(TREES.default as number)
}

/** How long to wait for a lock another process holds (a pull, a build); 0: fail at once. */
export function waitOption(description = 'wait this long for a running pull') {
  return new Option('--wait <seconds>', description).argParser(wholeNumber('--wait', 0, ONE_DAY)).default(0)
}

export function maxAgeOption(description: string) {
  return new Option('--max-age <seconds>', description).argParser(wholeNumber('--max-age', 0, TEN_YEARS)).default(DEFAULT_MAX_AGE_SECONDS as number)
}

// Schedule

export function cronOption(description: string) {
  return new Option('--cron <expr>', description).argParser(checked(checkCronExpression))
}

export function timezoneOption() {
  return new Option('--timezone <tz>', 'time zone of the --cron schedule').argParser(checked(checkTimezone)).default('UTC')
}

export function jitterOption(description: string) {
  return new Option('--jitter <seconds>', description).argParser(wholeNumber('--jitter', 0, ONE_DAY)).default(0)
}

// Output

export function jsonOption(description = 'print one JSON object') {
  return new Option('--json', description)
}

export function quietOption(description = 'no progress lines on stderr') {
  return new Option('--quiet', description)
}

// The master's policies

export function maxChainOption() {
  return new Option('--max-chain <n>', 'write a full once this many deltas follow the last one').argParser(wholeNumber('--max-chain', 1, 100000)).default(DEFAULT_FULL_POLICY.maxChain)
}

export function graceOption(description: string) {
  return new Option('--grace <seconds>', description).argParser(wholeNumber('--grace', 0, TEN_YEARS)).default(DEFAULT_GRACE_SECONDS as number)
}

export function fullRatioOption() {
  return new Option('--full-ratio <r>', 'write a full once the deltas since the last full reach this share of its size').argParser(ratio).default(DEFAULT_FULL_POLICY.deltaBytesRatio)
}
