import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { dirname } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

/**
 * The S3-compatible server the tests run: s3rver 3.7 (a devDependency, started in a child process
 * on 127.0.0.1 port 0, see s3rver-child.ts) behind a gate of our own, because s3rver alone would let a wrong client pass:
 *
 * - s3rver does not check SigV4 signatures ("Signature version 4 calculation is unimplemented":
 *   any signature with a known key id passes, and unsigned requests are served). The gate checks
 *   every request as S3 does (an independent implementation of SigV4 from AWS's spec, with the
 *   payload's sha256 when the client declares one), answers 403 SignatureDoesNotMatch /
 *   InvalidAccessKeyId / AccessDenied, and lets anonymous GET and HEAD through only when the
 *   bucket is made public (`publicRead`), like a bucket policy granting s3:GetObject.
 * - s3rver writes an object in place (truncate, then stream), so a reader could see a torn or
 *   half-written latest.json, which S3 never shows. The gate holds a per-key read/write lock
 *   around each request and takes a PUT's whole body before forwarding it, so that, as on S3, a
 *   PUT is atomic: readers see the old object or the new one, and a client killed mid-upload
 *   leaves nothing.
 */
export interface S3TestServer {
  /** The endpoint clients use (path-style): http://127.0.0.1:PORT */
  readonly endpoint: string
  readonly bucket: string
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly region: string
  /** Environment for a child `snapshot` process: credentials through the SDK's default chain. */
  env(overrides?: { secretAccessKey?: string }): NodeJS.ProcessEnv
  /** Plain public URL of a prefix in the bucket (works when publicRead is on). */
  httpUrl(prefix: string): string
  /** Requests the gate refused, by reason: lets a test prove the refusal came from the signature check. */
  readonly refused: Map<string, number>
  publicRead: boolean
  /** The next GET of a key ending with `suffix` is cut off after `bytes` bytes of body (a dropped connection). */
  cutNextGet(suffix: string, bytes: number): void
  /** Every request the gate passed on: method, key path, Range header. */
  readonly requests: { method: string; path: string; range: string | undefined }[]
  /** Called as each request arrives, before it is passed on (a test may kill its client there). */
  onRequest: ((q: { method: string; path: string }) => void) | undefined
  stop(): Promise<void>
}

export async function startS3Server(opts: { publicRead?: boolean; bucket?: string } = {}): Promise<S3TestServer> {
  const dir = await mkdtemp(join(tmpdir(), 'snapshot-s3rver-'))
  const bucket = opts.bucket ?? 'snapshots'
  const backend = await startBackend(dir, bucket)
  const inner = { port: backend.port }
  const accessKeyId = `AKIATEST${randomBytes(6).toString('hex').toUpperCase()}`
  const secretAccessKey = randomBytes(30).toString('base64')
  const region = 'us-east-1'
  const refused = new Map<string, number>()
  const locks = new KeyLocks()
  const state = { publicRead: opts.publicRead ?? false }
  const cuts: { suffix: string; bytes: number }[] = []
  const requests: S3TestServer['requests'] = []
  const hooks: { onRequest: S3TestServer['onRequest'] } = { onRequest: undefined }

  const gate = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) s3Error(res, 500, 'InternalError', String(err))
      else res.destroy()
    })
  })
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req) // the whole body before anything reaches s3rver: an aborted PUT stores nothing
    if (body === null) return // the client went away mid-request
    const auth = req.headers.authorization
    const method = req.method ?? 'GET'
    if (!auth) {
      if (!(state.publicRead && (method === 'GET' || method === 'HEAD'))) return refuse(res, 403, 'AccessDenied', 'Access Denied')
    } else {
      const why = verifySigV4(req, body, { accessKeyId, secretAccessKey, region })
      if (why) return refuse(res, 403, why.code, why.message)
    }
    const key = new URL(req.url ?? '/', 'http://x').pathname
    requests.push({ method, path: key, range: req.headers.range })
    hooks.onRequest?.({ method, path: key })
    const cutAt = method === 'GET' ? cuts.findIndex((c) => key.endsWith(c.suffix)) : -1
    const cut = cutAt >= 0 ? cuts.splice(cutAt, 1)[0]!.bytes : undefined
    const release = await locks.acquire(key, method === 'GET' || method === 'HEAD' ? 'read' : 'write')
    try {
      await forward(req, res, body, inner.port, cut)
    } finally {
      release()
    }
  }
  function refuse(res: ServerResponse, status: number, code: string, message: string): void {
    refused.set(code, (refused.get(code) ?? 0) + 1)
    s3Error(res, status, code, message)
  }
  await new Promise<void>((ok) => gate.listen(0, '127.0.0.1', ok))
  const port = (gate.address() as AddressInfo).port
  const endpoint = `http://127.0.0.1:${port}`
  return {
    endpoint,
    bucket,
    accessKeyId,
    secretAccessKey,
    region,
    refused,
    requests,
    get onRequest() {
      return hooks.onRequest
    },
    set onRequest(f) {
      hooks.onRequest = f
    },
    cutNextGet: (suffix, bytes) => void cuts.push({ suffix, bytes }),
    get publicRead() {
      return state.publicRead
    },
    set publicRead(v: boolean) {
      state.publicRead = v
    },
    env: (o = {}) => ({
      AWS_ACCESS_KEY_ID: accessKeyId,
      AWS_SECRET_ACCESS_KEY: o.secretAccessKey ?? secretAccessKey,
      AWS_REGION: region,
      AWS_EC2_METADATA_DISABLED: 'true', // never wander off to 169.254.169.254 looking for a role
      AWS_CONFIG_FILE: '/nonexistent',
      AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    }),
    httpUrl: (prefix) => `${endpoint}/${bucket}/${prefix.replace(/^\/+|\/+$/g, '')}/`,
    stop: async () => {
      gate.closeAllConnections()
      await new Promise<void>((ok) => gate.close(() => ok()))
      await backend.stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

async function startBackend(dir: string, bucket: string): Promise<{ port: number; stop(): Promise<void> }> {
  const script = join(dirname(fileURLToPath(import.meta.url)), 's3rver-child.js')
  const child = spawn(process.execPath, ['--openssl-legacy-provider', script, dir, bucket], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>((resolvePort, reject) => {
    const timer = setTimeout(() => reject(new Error('s3rver did not start within 15 s')), 15_000)
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer)
      resolvePort((JSON.parse(line) as { port: number }).port)
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`s3rver exited ${code}`))
    })
  })
  return {
    port,
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null) return done()
        child.once('exit', () => done())
        child.kill('SIGTERM')
      }),
  }
}

function readBody(req: IncomingMessage): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const parts: Buffer[] = []
    req.on('data', (c: Buffer) => parts.push(c))
    req.on('end', () => resolve(Buffer.concat(parts)))
    req.on('aborted', () => resolve(null))
    req.on('error', () => resolve(null))
  })
}

function forward(req: IncomingMessage, res: ServerResponse, body: Buffer, port: number, cutAfter?: number): Promise<void> {
  return new Promise((done) => {
    const headers = { ...req.headers }
    delete headers.authorization // checked here; s3rver would only look at the key id
    headers['content-length'] = String(body.length)
    delete headers['transfer-encoding']
    const up = httpRequest({ host: '127.0.0.1', port, method: req.method, path: req.url, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers)
      if (cutAfter !== undefined) {
        // send the first bytes, then drop the connection, as a network failure mid-download would
        let sent = 0
        upRes.on('data', (chunk: Buffer) => {
          if (sent >= cutAfter) return
          const piece = chunk.subarray(0, cutAfter - sent)
          sent += piece.length
          res.write(piece)
          if (sent >= cutAfter) res.socket?.destroy()
        })
        upRes.on('end', () => res.socket?.destroy())
        res.on('close', () => done())
        return
      }
      upRes.pipe(res)
      upRes.on('end', () => done())
      upRes.on('error', () => done())
      res.on('close', () => {
        upRes.destroy()
        done()
      })
    })
    up.on('error', (err) => {
      if (!res.headersSent) s3Error(res, 502, 'InternalError', err.message)
      done()
    })
    up.end(body)
  })
}

function s3Error(res: ServerResponse, status: number, code: string, message: string): void {
  const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) })
  res.end(xml)
}

/** Readers share a key; a writer has it alone. FIFO enough for tests; every wait ends when a request ends. */
class KeyLocks {
  private readonly held = new Map<string, { readers: number; writer: boolean; waiting: (() => void)[] }>()
  async acquire(key: string, mode: 'read' | 'write'): Promise<() => void> {
    let s = this.held.get(key)
    if (!s) this.held.set(key, (s = { readers: 0, writer: false, waiting: [] }))
    const entry = s
    const free = (): boolean => (mode === 'read' ? !entry.writer : !entry.writer && entry.readers === 0)
    while (!free()) await new Promise<void>((wake) => entry.waiting.push(wake))
    if (mode === 'read') entry.readers++
    else entry.writer = true
    let released = false
    return () => {
      if (released) return
      released = true
      if (mode === 'read') entry.readers--
      else entry.writer = false
      const waiting = entry.waiting.splice(0)
      for (const wake of waiting) wake()
      if (entry.readers === 0 && !entry.writer && entry.waiting.length === 0) this.held.delete(key)
    }
  }
}

const sha256Hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex')
const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest()

/** RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ is %XX (uppercase). */
function uriEncode(s: string, keepSlash: boolean): string {
  let out = ''
  for (const byte of Buffer.from(s, 'utf8')) {
    const ch = String.fromCharCode(byte)
    if (/[A-Za-z0-9\-_.~]/.test(ch) || (keepSlash && ch === '/')) out += ch
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/**
 * Checks an `Authorization: AWS4-HMAC-SHA256 ...` header per AWS's "Signature Version 4 signing
 * process" for S3 (path not double-encoded), and the body against x-amz-content-sha256 when it is
 * a hash. Returns why the request is refused, or null.
 */
export function verifySigV4(req: IncomingMessage, body: Buffer, creds: { accessKeyId: string; secretAccessKey: string; region: string }): { code: string; message: string } | null {
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(req.headers.authorization ?? '')
  if (!m) return { code: 'AccessDenied', message: 'unsupported Authorization header (expected AWS4-HMAC-SHA256)' }
  const [, keyId, date, region, signedHeaderList, signature] = m as unknown as [string, string, string, string, string, string]
  if (keyId !== creds.accessKeyId) return { code: 'InvalidAccessKeyId', message: 'The AWS Access Key Id you provided does not exist in our records.' }
  if (region !== creds.region) return { code: 'AuthorizationHeaderMalformed', message: `the region ${region} is wrong; expecting ${creds.region}` }
  const amzDate = String(req.headers['x-amz-date'] ?? '')
  if (!amzDate.startsWith(date)) return { code: 'AccessDenied', message: 'x-amz-date does not match the credential scope' }
  const payloadHash = String(req.headers['x-amz-content-sha256'] ?? '')
  if (!payloadHash) return { code: 'InvalidRequest', message: 'missing x-amz-content-sha256' }
  if (/^[0-9a-f]{64}$/.test(payloadHash) && sha256Hex(body) !== payloadHash) {
    return { code: 'XAmzContentSHA256Mismatch', message: "The provided 'x-amz-content-sha256' header does not match what was computed." }
  }
  const url = new URL(req.url ?? '/', 'http://x')
  const signed = signedHeaderList.split(';')
  if (!signed.includes('host')) return { code: 'AccessDenied', message: 'the host header must be signed' }
  const canonicalHeaders = signed
    .map((name) => {
      const raw = req.headersDistinct[name]
      if (raw === undefined) return null
      return `${name}:${raw.map((v) => v.trim().replace(/\s+/g, ' ')).join(',')}\n`
    })
  if (canonicalHeaders.includes(null)) return { code: 'AccessDenied', message: 'a signed header is missing' }
  const query = [...url.searchParams.entries()]
    .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)] as const)
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&')
  const path = uriEncode(decodeURIComponent(url.pathname), true)
  const canonicalRequest = [req.method, path, query, canonicalHeaders.join(''), signedHeaderList, payloadHash].join('\n')
  const scope = `${date}/${region}/s3/aws4_request`
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n')
  const kSigning = hmac(hmac(hmac(hmac(`AWS4${creds.secretAccessKey}`, date), region), 's3'), 'aws4_request')
  const expected = hmac(kSigning, stringToSign)
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) {
    return { code: 'SignatureDoesNotMatch', message: 'The request signature we calculated does not match the signature you provided. Check your key and signing method.' }
  }
  return null
}
