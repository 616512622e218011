/**
 * Where `snapshot publish` and `snapshot mirror` write a store: an S3 prefix (s3-destination.ts)
 * or a directory (dir-destination.ts). A destination knows nothing of snapshots: it lists what it
 * holds, takes immutable files (objects, records) and replaces one pointer. store-copy.ts decides
 * what goes and in which order; the destinations only write.
 */
export type PutOutcome = 'put' | 'multipart' | 'vanished'

export interface StoreDestination {
  /** `s3://BUCKET/PREFIX/` or the directory, for messages. */
  readonly description: string
  /** Every store file it holds (`objects/...`, `snapshots/...`, `latest.json`) with its size. */
  list(): Promise<Map<string, number>>
  /** The bytes of its latest.json (at most `maxBytes`), or null when it has none. */
  readPointer(maxBytes: number): Promise<Buffer | null>
  /**
   * The path of `relPath` on this machine when the destination is a directory (a verified download
   * may land there directly: it is renamed into place whole), or null when it is not (S3).
   */
  localPath(relPath: string): string | null
  /** An immutable file, copied in from a local file; 'vanished' when that file is gone. */
  putFile(relPath: string, file: string, size: number): Promise<PutOutcome>
  /** An immutable file (a record), from bytes in memory. */
  putBytes(relPath: string, bytes: Buffer): Promise<void>
  /** Replaces latest.json whole: readers see the old pointer or the new one. */
  putPointer(bytes: Buffer): Promise<void>
  delete(relPath: string): Promise<void>
  close(): void
}
