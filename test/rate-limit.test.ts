import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { openSource } from '../src/store/open-source.js'
import { MIN_RATE, parseRate, RateLimiter, TokenBucket, defaultBurst, type Clock } from '../src/store/rate-limit.js'
import { runCli, runJson, startServe } from './helpers/cli.js'
import { describeTree, writeTree } from './helpers/tree.js'

/**
 * --limit-rate: the token bucket's arithmetic on a clock the test drives (no timing here), the
 * limiter in the download path across a retry and resume, and the option through the CLI. The
 * cap through a real shaped link is measured by scripts/limit-rate-check.ts (BENCHMARKS.md).
 */
const work = mkdtempSync(join(tmpdir(), 'rate-limit-test-'))
after(() => rmSync(work, { recursive: true, force: true }))

/** A clock that only moves when someone sleeps on it: waits add up exactly, instantly. */
function fakeClock(): Clock & { slept: number[]; t: number } {
  const c = {
    t: 0,
    slept: [] as number[],
    now: () => c.t,
    sleep: async (ms: number) => {
      c.slept.push(ms)
      c.t += ms
    },
  }
  return c
}

test('parseRate: bytes per second, k/M/G binary as curl and wget, decimals allowed', () => {
  assert.equal(parseRate('500k'), 500 * 1024)
  assert.equal(parseRate('10M'), 10 * 1024 * 1024)
  assert.equal(parseRate('1.5M'), 1.5 * 1024 * 1024)
  assert.equal(parseRate('2m'), parseRate('2M'))
  assert.equal(parseRate('1G'), 1024 ** 3)
  assert.equal(parseRate('2097152'), 2097152)
  assert.equal(parseRate('16k'), MIN_RATE)
  assert.equal(parseRate('.5M'), 512 * 1024)
  for (const bad of ['', '10x', '-1M', '1e6', '10MB', '10 M', 'M', '1.2.3k', '0x10000']) {
    assert.throws(() => parseRate(bad), /is not a rate/, bad)
  }
  assert.throws(() => parseRate('8k'), /lowest rate is 16k/)
  assert.throws(() => parseRate('0'), /lowest rate is 16k/)
  assert.throws(() => parseRate('2000G'), /above 1024G/)
})

test('TokenBucket: starts full, lends no more than the burst, then charges the rate', () => {
  let now = 1000
  const b = new TokenBucket(1000, 500, () => now) // 1000 bytes/s, burst 500
  assert.equal(b.take(300), 0)
  assert.equal(b.take(200), 0) // the burst is spent
  assert.equal(b.take(100), 100) // 100 bytes owed: 100 ms at 1000 bytes/s
  now += 100
  assert.equal(b.take(0), 0) // paid
  now += 10_000 // a long pause refills only up to the burst
  assert.equal(b.take(500), 0)
  assert.equal(b.take(1), 1)
})

test('TokenBucket: a clock that steps back mints nothing', () => {
  let now = 5000
  const b = new TokenBucket(1000, 100, () => now)
  assert.equal(b.take(100), 0)
  now = 1000
  assert.equal(b.take(50), 50)
  now = 1050
  assert.equal(b.take(0), 50) // the step back is not time that passed
})

test('TokenBucket: a reader that honours the waits takes (bytes - burst) / rate, and no second holds more than rate + burst + one chunk', () => {
  const rate = 2 * 1024 * 1024
  const burst = defaultBurst(rate)
  assert.equal(burst, Math.round(rate / 10))
  let now = 0
  const b = new TokenBucket(rate, burst, () => now)
  const arrivals: Array<[number, number]> = []
  let total = 0
  const chunkSizes = [65536, 1448, 16384, 65536, 32768, 7]
  for (let i = 0; total < 20e6; i++) {
    const n = chunkSizes[i % chunkSizes.length]!
    arrivals.push([now, n])
    total += n
    now += b.take(n) + 0.05 // the time to read a chunk is not free
  }
  const seconds = now / 1000
  assert.ok(Math.abs(seconds - (total - burst) / rate) < 0.01 + (arrivals.length * 0.05) / 1000, `${seconds} s`)
  for (let start = 0; start < now; start += 250) {
    const inWindow = arrivals.filter(([t]) => t >= start && t < start + 1000).reduce((s, [, n]) => s + n, 0)
    assert.ok(inWindow <= rate + burst + 65536, `${inWindow} bytes in the second from ${start} ms`)
  }
})

test('RateLimiter: consume waits on its clock, throttle hands every chunk on unchanged and in order', async () => {
  const clock = fakeClock()
  const limiter = new RateLimiter(100_000, 10_000, clock)
  await limiter.consume(10_000)
  assert.deepEqual(clock.slept, [])
  await limiter.consume(50_000)
  assert.deepEqual(clock.slept, [500])
  const chunks = [Buffer.from('a'.repeat(25_000)), Buffer.from('b'.repeat(25_000))]
  const out: Buffer[] = []
  for await (const c of limiter.throttle((async function* () { yield* chunks })())) out.push(c)
  assert.deepEqual(out, chunks)
  assert.equal(clock.t, 1000) // 60k + 50k bytes - 10k burst, at 100k/s
})

test('http: the limiter counts every body byte once, across a connection reset and the resume', async (t) => {
  const body = randomBytes(256 * 1024)
  const expect = { sha256: createHash('sha256').update(body).digest('hex'), length: body.length }
  const half = 100_000
  let requests = 0
  const server = createServer((req, res) => {
    requests++
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
    if (requests === 1) {
      res.writeHead(200, { 'content-length': body.length })
      res.write(body.subarray(0, half), () => setTimeout(() => res.socket?.destroy(), 100))
    } else {
      const from = Number(m?.[1] ?? 0)
      res.writeHead(206, { 'content-length': body.length - from, 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` })
      res.end(body.subarray(from))
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
  const clock = fakeClock()
  const limiter = new RateLimiter(64 * 1024, 64 * 1024, clock)
  const dest = join(work, 'object')
  await openSource(url, { retries: 2, retryBaseMs: 10, limiter }).fetchObject(`objects/${expect.sha256}.tar.zst`, dest, expect)
  assert.deepEqual(readFileSync(dest), body)
  assert.equal(requests, 2)
  // 256 KiB in all (the first attempt's 100,000 bytes are kept, not fetched again), less the
  // 64 KiB burst, at 64 KiB/s: 3 s on the limiter's clock, each wait rounded up to the ms.
  assert.ok(clock.t >= 3000 && clock.t <= 3000 + clock.slept.length, `${clock.t} ms`)
})

test('dir: a local store is read under the same limiter', async () => {
  const store = join(work, 'dir-store')
  mkdirSync(join(store, 'objects'), { recursive: true })
  const body = randomBytes(3 * 1024 * 1024)
  const sha256 = createHash('sha256').update(body).digest('hex')
  writeFileSync(join(store, 'objects', `${sha256}.tar.zst`), body)
  const clock = fakeClock()
  const limiter = new RateLimiter(1024 * 1024, 1024 * 1024, clock)
  await openSource(store, { limiter }).fetchObject(`objects/${sha256}.tar.zst`, join(work, 'dir-object'), { sha256, length: body.length })
  assert.equal(clock.t, 2000) // 3 MiB less a 1 MiB burst at 1 MiB/s
})

test('snapshot pull --limit-rate: pulls under the cap from a real server; a bad rate is a usage error (exit 2), on the command line or in a config file', async (t) => {
  const source = join(work, 'source')
  writeTree(source, { 'a.m3u': '#EXTM3U\none.mp3\n', 'lists/b.m3u': randomBytes(200_000).toString('base64') })
  const store = join(work, 'store')
  await runJson(['build', '--source', source, '--store', store])
  const server = await startServe(store)
  t.after(() => server.stop())
  const target = join(work, 'replica', 'playlists')
  mkdirSync(join(work, 'replica'))
  const r = await runJson<{ action: string }>(['pull', '--from', server.url, '--target', target, '--swap', '--limit-rate', '1.5M'])
  assert.equal(r.action, 'swapped')
  assert.deepEqual(describeTree(target), describeTree(source))

  const bad = await runCli(['pull', '--from', server.url, '--target', join(work, 'replica', 'other'), '--limit-rate', '10 mbit'])
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /'10 mbit' is not a rate/)
  const config = join(work, 'replica.json')
  writeFileSync(config, JSON.stringify({ from: server.url, target: join(work, 'replica', 'other'), pull: { 'limit-rate': '1k' } }))
  const badConfig = await runCli(['pull', '--config', config])
  assert.equal(badConfig.code, 2)
  assert.match(badConfig.stderr, /limit-rate.*lowest rate is 16k/)
})
