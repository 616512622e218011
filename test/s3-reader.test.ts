import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { loadPublicKey, openEnvelope, parsePointerPayload } from '../src/core/pointer.js'
import { recordObjects } from '../src/core/snapshot-record.js'
import { runJson } from './helpers/cli.js'
import { startS3Server } from './helpers/s3-server.js'
import { writeTree } from './helpers/tree.js'

/**
 * The order of a publish is what keeps readers safe: a reader polling the bucket while builds
 * publish (and prunes delete) must never get a pointer that names a record or an object the
 * bucket does not hold in full. Bounded: a fixed number of publishes, the reader stops when the
 * publisher is done, after 5000 polls or after 120 s.
 */
test('a reader polling the bucket during publishes and prunes never sees a pointer whose objects are missing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'snapshot-s3-reader-'))
  const s3 = await startS3Server({ publicRead: true })
  t.after(async () => {
    await s3.stop()
    rmSync(dir, { recursive: true, force: true })
  })
  const source = join(dir, 'master')
  const store = join(dir, 'store')
  const keys = join(dir, 'keys')
  mkdirSync(source)
  for (let i = 0; i < 30; i++) writeTree(source, { [`p/${i}.m3u`]: `${i}\n${createHash('sha256').update(String(i)).digest('hex')}\n` })
  await runJson(['keygen', '--out', keys, '--quiet'])
  const pubkey = loadPublicKey(readFileSync(join(keys, 'snapshot.pub')))
  const base = s3.httpUrl('live')
  const publishArgs = ['--publish', `s3://${s3.bucket}/live`, '--endpoint', s3.endpoint, '--path-style', '--concurrency', '1']

  const PUBLISHES = 6
  let publisherDone = false
  const publisher = (async () => {
    try {
      for (let k = 1; k <= PUBLISHES; k++) {
        writeTree(source, { [`p/${k}.m3u`]: `changed in ${k}\n`, [`new/${k}.m3u`]: `new ${k}\n` })
        await runJson(['build', '--source', source, '--store', store, '--key', join(keys, 'snapshot.key'), '--quiet', ...(k % 2 === 0 ? ['--full'] : []), ...publishArgs], { env: s3.env() })
        // prune locally: the next publish deletes from the bucket what the store lost
        await runJson(['prune', '--store', store, '--keep', '1', '--grace', '0'])
      }
    } finally {
      publisherDone = true
    }
  })()

  const seen = new Set<number>()
  const violations: string[] = []
  let polls = 0
  let objectChecks = 0
  const started = Date.now()
  const pointerNow = async (): Promise<string | null> => {
    const r = await fetch(`${base}latest.json`, { headers: { 'cache-control': 'no-cache' } })
    return r.status === 200 ? r.text() : null
  }
  while (!publisherDone && polls < 5000 && Date.now() - started < 120_000) {
    polls++
    const text = await pointerNow()
    if (text === null) {
      await new Promise((r) => setTimeout(r, 20))
      continue
    }
    const pointer = parsePointerPayload(openEnvelope(text, [pubkey])) // a torn or unsigned pointer fails the test here
    seen.add(pointer.latest.id)
    for (const record of pointer.chain) {
      const wanted = [{ path: `snapshots/${record.id}.json`, length: -1 }, ...recordObjects(record)]
      for (const ref of wanted) {
        const head = await fetch(`${base}${ref.path}`, { method: 'HEAD' })
        objectChecks++
        const length = Number(head.headers.get('content-length'))
        if (head.status === 200 && (ref.length < 0 || length === ref.length)) continue
        // Missing while this very pointer is still the bucket's: the order was wrong.
        if ((await pointerNow()) === text) violations.push(`pointer ${pointer.latest.id} names ${ref.path}: HTTP ${head.status}, ${length} bytes of ${ref.length}`)
      }
    }
  }
  await publisher
  assert.deepEqual(violations, [])
  assert.ok(publisherDone, 'the reader gave up before the publisher finished')
  assert.ok(seen.size >= 3, `the reader saw only snapshots ${[...seen].join(', ')}: it did not overlap the publishes`)
  assert.ok(objectChecks > 20)
  t.diagnostic(`${polls} polls, ${objectChecks} object checks, snapshots seen: ${[...seen].sort((a, b) => a - b).join(', ')}`)
})
