import { Counter, type Registry } from 'prom-client'

/** `snapshot serve`: requests and the bytes sent, by HTTP status code. */
export interface ServeMetrics {
  readonly requests: Counter
  readonly responseBytes: Counter
}

export function createServeMetrics(registry: Registry): ServeMetrics {
  return {
    requests: new Counter({ name: 'snapshot_serve_requests_total', help: 'Requests answered, by HTTP status code.', labelNames: ['code'], registers: [registry] }),
    responseBytes: new Counter({ name: 'snapshot_serve_response_bytes_total', help: 'Bytes written to clients (headers and body; a cut download counts what was sent), by HTTP status code.', labelNames: ['code'], registers: [registry] }),
  }
}

export function recordResponse(m: ServeMetrics, status: number, bytes: number): void {
  const code = String(status)
  m.requests.inc({ code })
  if (bytes > 0) m.responseBytes.inc({ code }, bytes)
}
