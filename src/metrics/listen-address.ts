/** `--metrics-listen HOST:PORT`: a bare `:PORT` or `PORT` listens on 127.0.0.1 only. */
export interface ListenAddress {
  readonly host: string
  readonly port: number
}

export function parseListenAddress(value: string): ListenAddress {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]\s]*):)?(\d{1,5})$/.exec(value.trim())
  const port = m ? Number(m[2]) : NaN
  if (!m || !(port >= 0 && port <= 65535)) throw new Error(`'${value}' is not HOST:PORT, :PORT or PORT (port 0-65535)`)
  const host = m[1] === undefined || m[1] === '' ? '127.0.0.1' : m[1].replace(/^\[(.*)\]$/, '$1')
  return { host, port }
}
