import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from './free-port.js'

/**
 * Debian's nginx serving a store with the repository's own config (deploy/nginx/), on 127.0.0.1
 * and a free port, in the foreground (no daemon), everything it writes under `tmp`. The shipped
 * server block is used as it is, with only `listen` and `root` replaced.
 */
export const NGINX_CONF = resolve(dirname(fileURLToPath(import.meta.url)), '../../../deploy/nginx/snapshot-store.conf')

export interface Nginx {
  readonly url: string
  readonly errorLog: string
  stop(): Promise<void>
}

export function requireNginx(): string {
  const found = spawnSync('sh', ['-c', 'command -v nginx || ls /usr/sbin/nginx'], { encoding: 'utf8' }).stdout.trim().split('\n')[0]
  if (!found) throw new Error('nginx is not installed: run `bash scripts/test-deps.sh` (as root) to install the Debian package')
  return found
}


export async function startNginx(store: string, tmp: string): Promise<Nginx> {
  const bin = requireNginx()
  const server = readFileSync(NGINX_CONF, 'utf8')
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort() // a rival may take it before nginx binds: then try another
    const block = server.replace(/^(\s*)listen\s+[^;]+;/m, `$1listen 127.0.0.1:${port};`).replace(/^(\s*)root\s+[^;]+;/m, `$1root ${store};`)
    if (!block.includes(`127.0.0.1:${port}`) || !block.includes(store)) throw new Error(`${NGINX_CONF}: no listen or root line to replace`)
    mkdirSync(join(tmp, 'logs'), { recursive: true })
    const errorLog = join(tmp, 'logs', 'error.log')
    const conf = join(tmp, 'nginx.conf')
    const temp = (name: string): string => `${name}_temp_path ${join(tmp, name)};`
    writeFileSync(
      conf,
      [
        'daemon off;',
        'worker_processes 1;',
        `pid ${join(tmp, 'nginx.pid')};`,
        `error_log ${errorLog} warn;`,
        'events { worker_connections 64; }',
        'http {',
        '  access_log off;',
        `  ${temp('client_body')} ${temp('proxy')} ${temp('fastcgi')} ${temp('uwsgi')} ${temp('scgi')}`,
        block,
        '}',
        '',
      ].join('\n'),
    )
    const child: ChildProcess = spawn(bin, ['-c', conf, '-p', tmp, '-e', errorLog], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    const url = `http://127.0.0.1:${port}/`
    const up = await waitUp(url, child, 10_000)
    if (up) {
      return {
        url,
        errorLog,
        stop: () =>
          new Promise<void>((done) => {
            if (child.exitCode !== null || child.signalCode !== null) return done()
            child.once('exit', () => done())
            child.kill('SIGQUIT') // graceful: workers finish, the pid file goes
            setTimeout(() => child.kill('SIGKILL'), 5000).unref()
          }),
      }
    }
    child.kill('SIGKILL')
    const log = (() => {
      try {
        return readFileSync(errorLog, 'utf8')
      } catch {
        return ''
      }
    })()
    if (!/Address already in use/.test(stderr + log) || attempt === 3) throw new Error(`nginx did not start: ${stderr}\n${log}`)
  }
  throw new Error('unreachable')
}

async function waitUp(url: string, child: ChildProcess, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (child.exitCode !== null) return false
    try {
      await fetch(url)
      return true
    } catch {
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  return false
}
