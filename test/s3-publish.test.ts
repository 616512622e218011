import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { publishStore } from '../src/publish/publish-store.js'
import { makeS3Client } from '../src/store/s3-client.js'
import { parseS3Url } from '../src/store/s3-location.js'
import { spawn } from 'node:child_process'
import { BIN, runCli, runJson } from './helpers/cli.js'
import { startS3Server, type S3TestServer } from './helpers/s3-server.js'
import { treeDiff, writeTree } from './helpers/tree.js'

/**
 * `snapshot publish` and `pull --from s3://` against a real S3-compatible server that checks
 * signatures (helpers/s3-server.ts), through the real CLI: publish, pull through the bucket's
 * plain HTTP endpoint and through s3://, a wrong secret refused, a publish killed mid-way and
 * rerun, multipart and ListObjectsV2 paging, prune mirrored to the bucket.
 */
interface Published {
  id: number
  to: string
  uploaded: { objects: number; records: number; pointer: boolean; bytes: number; multipart: number }
  skipped: number
  deleted: string[]
  held: string[]
}
interface Pulled {
  action: string
  id: number
}

describe('publish to S3 and pull from it', () => {
  let dir: string
  let source: string
  let store: string
  let keys: string
  let s3: S3TestServer
  let counter = 0

  const pub = (): string => join(keys, 'snapshot.pub')
  const s3Flags = (): string[] => ['--endpoint', s3.endpoint, '--path-style']
  const build = (...extra: string[]) => runJson<{ id: number; kind: string; published?: Published }>(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--quiet', ...extra], { env: s3.env() })
  const publish = (prefix: string, ...extra: string[]) => runJson<Published>(['publish', '--store', store, '--to', `s3://${s3.bucket}/${prefix}`, ...s3Flags(), '--quiet', ...extra], { env: s3.env() })
  const pullFrom = (from: string[], target: string, env: NodeJS.ProcessEnv = s3.env(), ...extra: string[]) =>
    runCli(['pull', ...from.flatMap((f) => ['--from', f]), '--target', target, '--pubkey', pub(), '--swap', '--quiet', '--json', '--retries', '1', ...extra], { env })
  const client = (): S3Client => makeS3Client({ endpoint: s3.endpoint, pathStyle: true, region: s3.region })
  const keysUnder = async (prefix: string): Promise<string[]> => {
    const out = await client().send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: `${prefix}/` }))
    return (out.Contents ?? []).map((o) => o.Key!.slice(prefix.length + 1)).sort()
  }
  const edit = (): void => writeTree(source, { [`edits/${++counter}.m3u`]: `edit ${counter}\n`, 'a.m3u': `a ${counter}\n` })

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapshot-s3-'))
    source = join(dir, 'master')
    store = join(dir, 'store')
    keys = join(dir, 'keys')
    mkdirSync(source)
    writeTree(source, { 'a.m3u': 'a\n', 'b/c.m3u': 'c\n', link: { link: 'a.m3u' }, empty: { dir: true } })
    for (let i = 0; i < 20; i++) writeTree(source, { [`stable/${i}.m3u`]: `stable ${i}\n${createHash('sha256').update(String(i)).digest('base64')}\n` })
    s3 = await startS3Server()
    Object.assign(process.env, s3.env()) // the in-process publishes below use the same default credential chain
    await runJson(['keygen', '--out', keys, '--quiet'])
  })
  after(async () => {
    await s3?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('build --publish, then pull through the bucket\'s HTTP endpoint and through s3://; headers for a CDN', async () => {
    const built = await build('--publish', `s3://${s3.bucket}/main`, ...s3Flags())
    assert.equal(built.published?.id, built.id)
    assert.equal(built.published?.uploaded.pointer, true)
    const listed = await keysUnder('main')
    assert.ok(listed.includes('latest.json') && listed.includes(`snapshots/${built.id}.json`), listed.join(' '))
    assert.ok(listed.filter((k) => k.startsWith('objects/')).length >= 2)

    // a private bucket: plain HTTP is refused, s3:// with the credentials works
    assert.equal((await fetch(`${s3.httpUrl('main')}latest.json`)).status, 403)
    const viaS3 = join(dir, 'replica-s3')
    const r = await pullFrom([`s3://${s3.bucket}/main`], viaS3, s3.env(), ...s3Flags())
    assert.equal(r.code, 0, r.stderr)
    assert.equal((JSON.parse(r.stdout) as Pulled).action, 'swapped')
    assert.deepEqual(treeDiff(source, viaS3), [])

    // a wrong secret: refused by the server (its signature check), exit 4, nothing live changes
    edit()
    const refusedBefore = s3.refused.get('SignatureDoesNotMatch') ?? 0
    const bad = await runCli(['publish', '--store', store, '--to', `s3://${s3.bucket}/main`, ...s3Flags()], { env: s3.env({ secretAccessKey: 'not-the-secret' }) })
    assert.equal(bad.code, 4, bad.stderr)
    assert.match(bad.stderr, /SignatureDoesNotMatch.*check the credentials/)
    assert.ok((s3.refused.get('SignatureDoesNotMatch') ?? 0) > refusedBefore)
    const badPull = await pullFrom([`s3://${s3.bucket}/main`], viaS3, s3.env({ secretAccessKey: 'not-the-secret' }), ...s3Flags())
    assert.equal(badPull.code, 4, badPull.stderr)
    assert.ok(treeDiff(source, viaS3).length > 0) // the edit did not reach the replica
    await build()
    const p = await publish('main')
    assert.equal(p.uploaded.pointer, true)
    assert.equal(p.uploaded.records, 1)

    // a public bucket (a bucket policy granting GetObject): plain HTTP, as a CDN would fetch it
    s3.publicRead = true
    try {
      const viaHttp = join(dir, 'replica-http')
      const h = await pullFrom([s3.httpUrl('main')], viaHttp)
      assert.equal(h.code, 0, h.stderr)
      assert.deepEqual(treeDiff(source, viaHttp), [])
      const pointer = await fetch(`${s3.httpUrl('main')}latest.json`)
      assert.equal(pointer.headers.get('cache-control'), 'no-cache')
      const object = listed.find((k) => k.startsWith('objects/'))!
      const o = await fetch(`${s3.httpUrl('main')}${object}`, { headers: { range: 'bytes=0-9' } })
      assert.equal(o.status, 206)
      assert.equal(o.headers.get('cache-control'), 'public, max-age=31536000, immutable')
      const rec = await fetch(`${s3.httpUrl('main')}snapshots/${built.id}.json`)
      assert.equal(rec.headers.get('cache-control'), 'public, max-age=31536000, immutable')
    } finally {
      s3.publicRead = false
    }
    const again = await pullFrom([`s3://${s3.bucket}/main`], viaS3, s3.env(), ...s3Flags())
    assert.equal(again.code, 0, again.stderr)
    assert.deepEqual(treeDiff(source, viaS3), [])

    // publishing again sends nothing: every key is there with its size
    const idle = await publish('main')
    assert.deepEqual(idle.uploaded, { objects: 0, records: 0, pointer: false, bytes: 0, multipart: 0 })
    assert.ok(idle.skipped >= 6)
  })

  test('a publish killed mid-way leaves no pointer to a missing object, and a rerun completes', async () => {
    // SIGKILL after the second object, as kill -9 or a power cut would (crash-points.ts)
    const killed = await runCli(['publish', '--store', store, '--to', `s3://${s3.bucket}/killed`, ...s3Flags(), '--concurrency', '1', '--quiet'], {
      env: { ...s3.env(), SNAPSHOT_CRASH_AT: 'publish:object#2' },
    })
    assert.notEqual(killed.code, 0)
    const partial = await keysUnder('killed')
    assert.equal(partial.length, 2, partial.join(' '))
    assert.ok(!partial.includes('latest.json'))
    const target = join(dir, 'replica-killed')
    const early = await pullFrom([`s3://${s3.bucket}/killed`], target, s3.env(), ...s3Flags())
    assert.equal(early.code, 10, early.stderr) // no snapshot yet: never a half-published one

    const rerun = await publish('killed')
    assert.equal(rerun.skipped, 2)
    assert.equal(rerun.uploaded.pointer, true)
    const local = readdirSync(join(store, 'objects')).length + readdirSync(join(store, 'snapshots')).length + 1
    assert.equal((await keysUnder('killed')).length, local)
    const r = await pullFrom([`s3://${s3.bucket}/killed`], target, s3.env(), ...s3Flags())
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(treeDiff(source, target), [])
  })

  test('a publish SIGKILLed from outside while uploading, then rerun, completes', async () => {
    // kill the child the moment its third PUT reaches the server, whatever else it has in flight
    const prefix = 'sigkilled'
    let puts = 0
    const child = spawn(process.execPath, [BIN, 'publish', '--store', store, '--to', `s3://${s3.bucket}/${prefix}`, ...s3Flags(), '--concurrency', '2', '--quiet'], { env: { ...process.env, ...s3.env() }, stdio: 'ignore' })
    s3.onRequest = (q) => {
      if (q.method === 'PUT' && q.path.startsWith(`/${s3.bucket}/${prefix}/`) && ++puts === 3) child.kill('SIGKILL')
    }
    const signal = await new Promise<NodeJS.Signals | null>((ok) => child.once('exit', (_code, sig) => ok(sig)))
    s3.onRequest = undefined
    assert.equal(signal, 'SIGKILL', 'the publish ended before its third PUT')
    const partial = await keysUnder(prefix)
    assert.ok(!partial.includes('latest.json'), partial.join(' '))
    const rerun = await publish(prefix)
    assert.equal(rerun.uploaded.pointer, true)
    assert.ok(rerun.skipped >= 1)
    const local = readdirSync(join(store, 'objects')).length + readdirSync(join(store, 'snapshots')).length + 1
    assert.equal((await keysUnder(prefix)).length, local)
    const target = join(dir, 'replica-sigkilled')
    const r = await pullFrom([`s3://${s3.bucket}/${prefix}`], target, s3.env(), ...s3Flags())
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(treeDiff(source, target), [])
  })

  test('objects above the part size go up in parts; listing pages with ListObjectsV2 continuation; a dropped download resumes with Range', async () => {
    const big = join(dir, 'big-master')
    const bigStore = join(dir, 'big-store')
    mkdirSync(big)
    for (let i = 0; i < 6; i++) writeFileSync(join(big, `noise-${i}.bin`), randomBytes(1 << 20)) // incompressible: a ~6 MiB archive
    await runJson(['build', '--source', big, '--store', bigStore, '--key', join(keys, 'snapshot.key'), '--quiet'])
    const to = parseS3Url(`s3://${s3.bucket}/big`)
    const c = client()
    const first = await publishStore({ store: bigStore, to, client: c, partBytes: 5 << 20 })
    assert.equal(first.uploaded.multipart, 1)
    // a listing two keys a page must still see everything: nothing is sent again
    const second = await publishStore({ store: bigStore, to, client: c, partBytes: 5 << 20, pageSize: 2 })
    assert.equal(second.uploaded.objects + second.uploaded.records, 0)
    assert.equal(second.skipped, first.uploaded.objects + first.uploaded.records)
    // the connection drops after 1 MiB of the archive: the pull resumes it with a Range request
    s3.cutNextGet('.tar.zst', 1 << 20)
    const target = join(dir, 'replica-big')
    const r = await pullFrom([`s3://${s3.bucket}/big`], target, s3.env(), ...s3Flags())
    assert.equal(r.code, 0, r.stderr)
    const gets = s3.requests.filter((q) => q.method === 'GET' && q.path.startsWith(`/${s3.bucket}/big/objects/`) && q.path.endsWith('.tar.zst'))
    assert.equal(gets.length, 2, JSON.stringify(gets))
    assert.match(gets[1]!.range ?? '', /^bytes=(\d+)-$/)
    assert.ok(Number(/\d+/.exec(gets[1]!.range!)![0]) >= 1 << 19, `resumed from ${gets[1]!.range}`)
    assert.deepEqual(treeDiff(big, target), [])
    c.destroy()
  })

  test('prune is mirrored: the bucket loses what the store lost, but only once no pointer in the bucket names it', async () => {
    const prefix = 'pruned'
    edit()
    await build('--full')
    await publish(prefix)
    const named = (id: number): string[] => {
      const env = JSON.parse(readFileSync(join(store, 'snapshots', `${id}.json`), 'utf8')) as { signed: string }
      const r = (JSON.parse(env.signed) as { snapshot: Record<string, { archive: { path: string }; manifest: { path: string } } | undefined> }).snapshot
      return [r.delta, r.full].flatMap((pair) => (pair ? [pair.archive.path, pair.manifest.path] : []))
    }
    const bucketAt = (await runJson<{ latest: number }>(['list', '--store', store])).latest
    const namedByBucket = named(bucketAt)
    edit()
    const newest = await build('--full')
    const pruned = await runJson<{ removed: { snapshots: number[] } }>(['prune', '--store', store, '--keep', '1', '--grace', '0'])
    assert.ok(pruned.removed.snapshots.includes(bucketAt))

    // the bucket still points at `bucketAt`: its objects stay, everything older goes
    const p1 = await publish(prefix)
    assert.ok(p1.deleted.length > 0)
    for (const k of named(newest.id)) assert.ok(!p1.deleted.includes(k))
    const held = namedByBucket.filter((k) => !named(newest.id).includes(k))
    assert.ok(held.length > 0)
    for (const k of held) assert.ok(p1.held.includes(k), `${k} should be held`)
    const after1 = await keysUnder(prefix)
    for (const k of held) assert.ok(after1.includes(k))

    // the pointer has moved: the next publish removes them, and the bucket equals the store
    const p2 = await publish(prefix)
    for (const k of held) assert.ok(p2.deleted.includes(k))
    const localKeys = ['latest.json', ...readdirSync(join(store, 'objects')).map((n) => `objects/${n}`), ...readdirSync(join(store, 'snapshots')).map((n) => `snapshots/${n}`)].sort()
    assert.deepEqual(await keysUnder(prefix), localKeys)
    const target = join(dir, 'replica-pruned')
    const r = await pullFrom([`s3://${s3.bucket}/${prefix}`], target, s3.env(), ...s3Flags())
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(treeDiff(source, target), [])
  })
})
