import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before } from 'node:test'
import { runJson, startServe } from './cli.js'

/** A master's working set for a suite of CLI tests: paths known at once, filled in by `before`. */
export interface MasterFixture {
  /** The temp directory holding everything below; removed after the suite. */
  readonly dir: string
  /** `dir/master`: the tree to publish, created empty. */
  readonly source: string
  /** `dir/store`: the store, created empty. */
  readonly store: string
  /** `dir/keys`: a key pair from `snapshot keygen` (snapshot.key, snapshot.pub). */
  readonly keys: string
  /** A `snapshot serve` of the store on 127.0.0.1, with `serve: true`; its URL once started. */
  readonly server: { readonly url: string }
}

/**
 * The set-up the CLI suites share: a temp directory with an empty source and store and a key pair,
 * and with `serve` a real `snapshot serve` of the store. Call it in a `describe`: it registers the
 * suite's first `before` (the suite's own `before` runs after it, to write its tree) and an
 * `after` that stops the server and removes the directory.
 */
export function masterFixture(prefix: string, opts: { serve?: boolean } = {}): MasterFixture {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const source = join(dir, 'master')
  const store = join(dir, 'store')
  const keys = join(dir, 'keys')
  let running: Awaited<ReturnType<typeof startServe>> | undefined
  before(async () => {
    mkdirSync(source)
    mkdirSync(store)
    await runJson(['keygen', '--out', keys, '--quiet'])
    if (opts.serve) running = await startServe(store)
  })
  after(async () => {
    await running?.stop()
    rmSync(dir, { recursive: true, force: true })
  })
  const server = {
    get url(): string {
      if (running === undefined) throw new Error(opts.serve ? 'the store is served from the suite\'s before on' : 'masterFixture was asked for no server')
      return running.url
    },
  }
  return { dir, source, store, keys, server }
}
