import { fileURLToPath } from 'node:url'
import { UsageError } from '../core/errors.js'
import { DirSource } from './dir-source.js'
import { HttpSource } from './http-source.js'
import type { ObjectSource, SourceOptions } from './object-source.js'
import type { S3ConnectOptions } from './s3-client.js'
import { isS3Url } from './s3-location.js'
import { S3Source } from './s3-source.js'

/** `--from`: http(s):// (or s3://, file://, or a plain path) to the matching source. */
export function openSource(from: string, opts: SourceOptions & { s3?: S3ConnectOptions } = {}): ObjectSource {
  if (/^https?:\/\//i.test(from)) return new HttpSource(from, opts)
  if (isS3Url(from)) return new S3Source(from, opts)
  if (/^file:\/\//i.test(from)) return new DirSource(fileURLToPath(from), opts.limiter)
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(from)) throw new UsageError(`--from ${from}: expected an http(s):// or s3:// URL, or a directory`)
  return new DirSource(from, opts.limiter)
}
