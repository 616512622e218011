/**
 * The WAN bench's latency proxy (scripts/wan-latency-proxy.ts) in front of the real static
 * server: bytes pass intact both ways (also more than its buffer, so backpressure is exercised),
 * and it counts request heads exactly, which the bench reports as requests per pull.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startStaticServer } from '../src/http/static-server.js'
import { startDelayProxy } from '../scripts/wan-latency-proxy.js'

function get(port: number, path: string, agent: Agent): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, agent }, (res) => {
      const parts: Buffer[] = []
      res.on('data', (d: Buffer) => parts.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }))
      res.on('error', reject)
    })
      .on('error', reject)
      .end()
  })
}

test('the latency proxy passes bytes intact, with backpressure, and counts request heads', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'snapshot-proxy-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const big = randomBytes(12 << 20) // three times the proxy's buffer
  await writeFile(join(dir, 'latest.json'), '{"v":1}')
  // serve answers only the paths a store holds: the big body is an object, named by its hash.
  const bigPath = `objects/${createHash('sha256').update(big).digest('hex')}.tar.zst`
  await mkdir(join(dir, 'objects'))
  await writeFile(join(dir, bigPath), big)
  const server = await startStaticServer({ root: dir })
  t.after(() => server.close())
  const { server: proxy, counters } = await startDelayProxy({ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: server.port }, 20)
  t.after(() => new Promise<void>((r) => proxy.close(() => r())))
  const port = (proxy.address() as { port: number }).port
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.after(() => agent.destroy())

  const a = await get(port, '/latest.json', agent)
  const b = await get(port, `/${bigPath}`, agent)
  assert.equal(b.status, 200)
  const c = await get(port, '/latest.json', agent)
  assert.equal(a.body.toString(), '{"v":1}')
  assert.equal(c.status, 200)
  assert.equal(createHash('sha256').update(b.body).digest('hex'), createHash('sha256').update(big).digest('hex'))
  assert.equal(counters.connections, 1, 'one kept-alive connection')
  assert.equal(counters.requests, 3)
  assert.ok(counters.bytesDown > big.length)
  assert.ok(counters.bytesUp > 0 && counters.bytesUp < 2048)
})
