import assert from 'node:assert/strict'
import { test } from 'node:test'
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { startS3Server, type S3TestServer } from './helpers/s3-server.js'

/**
 * The test S3 server must refuse what S3 refuses, or every S3 test could pass with a wrong
 * client: these pin the gate in front of s3rver (see helpers/s3-server.ts).
 */
function client(s3: S3TestServer, secretAccessKey = s3.secretAccessKey): S3Client {
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
  })
}

test('the test S3 server checks SigV4: the right secret works, a wrong one is refused', async (t) => {
  const s3 = await startS3Server()
  t.after(() => s3.stop())
  const good = client(s3)
  await good.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'p/a b+c.txt', Body: 'hello', CacheControl: 'no-cache' }))
  const got = await good.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'p/a b+c.txt' }))
  assert.equal(await got.Body!.transformToString(), 'hello')
  assert.equal(got.CacheControl, 'no-cache')

  const bad = client(s3, s3.secretAccessKey.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')))
  await assert.rejects(bad.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'p/a b+c.txt' })), (err: Error) => err.name === 'SignatureDoesNotMatch')
  await assert.rejects(bad.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'p/x', Body: 'evil' })), (err: Error) => err.name === 'SignatureDoesNotMatch')
  assert.equal(s3.refused.get('SignatureDoesNotMatch'), 2)
  await assert.rejects(good.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'p/x' })), (err: Error) => err.name === 'NoSuchKey')
})

test('the test S3 server: anonymous reads only when public, and ListObjectsV2 pages', async (t) => {
  const s3 = await startS3Server()
  t.after(() => s3.stop())
  const c = client(s3)
  for (let i = 0; i < 5; i++) await c.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `q/k${i}`, Body: `v${i}` }))
  assert.equal((await fetch(`${s3.httpUrl('q')}k1`)).status, 403)
  s3.publicRead = true
  const r = await fetch(`${s3.httpUrl('q')}k1`, { headers: { range: 'bytes=1-' } })
  assert.equal(r.status, 206)
  assert.equal(await r.text(), '1')

  const keys: string[] = []
  let token: string | undefined
  let pages = 0
  do {
    const page = await c.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'q/', MaxKeys: 2, ...(token ? { ContinuationToken: token } : {}) }))
    keys.push(...(page.Contents ?? []).map((o) => o.Key!))
    token = page.IsTruncated ? page.NextContinuationToken : undefined
    pages++
  } while (token && pages < 10)
  assert.equal(pages, 3)
  assert.deepEqual(keys, ['q/k0', 'q/k1', 'q/k2', 'q/k3', 'q/k4'])
})
