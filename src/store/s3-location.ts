import { UsageError } from '../core/errors.js'

/**
 * `s3://BUCKET/PREFIX`: where a store lives in a bucket. The store's relative paths
 * (`latest.json`, `objects/...`) become keys under PREFIX, so one bucket can hold several stores.
 */
export interface S3Location {
  readonly bucket: string
  /** '' or ending with '/'. */
  readonly prefix: string
}

export function isS3Url(value: string): boolean {
  return /^s3:\/\//i.test(value)
}

export function parseS3Url(value: string, flag = '--to'): S3Location {
  const m = /^s3:\/\/([^/?#]+)(\/[^?#]*)?$/i.exec(value)
  // S3's own bucket naming rules (lowercase, digits, dots, hyphens; 3-63 characters)
  if (!m || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(m[1]!)) {
    throw new UsageError(`${flag} ${value}: expected s3://BUCKET/PREFIX (a bucket name of 3-63 lowercase letters, digits, dots and hyphens)`)
  }
  const segments = (m[2] ?? '').split('/').filter((s) => s !== '')
  if (segments.some((s) => s === '.' || s === '..')) throw new UsageError(`${flag} ${value}: the prefix may not hold . or .. segments`)
  return { bucket: m[1]!, prefix: segments.length > 0 ? `${segments.join('/')}/` : '' }
}

export function s3Key(loc: S3Location, relPath: string): string {
  return `${loc.prefix}${relPath}`
}

export function describeS3(loc: S3Location, relPath = ''): string {
  return `s3://${loc.bucket}/${loc.prefix}${relPath}`
}
