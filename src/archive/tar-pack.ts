import { Header, Pax } from 'tar'

/**
 * Packs entries into a standard tar stream by encoding headers straight into large buffers:
 * node-tar's high-level `tar.c` costs ~100 µs and a stream per entry, which a million tiny files
 * cannot afford (../shared/NOTES.md). Owner is always 0/0 and mtime the snapshot's time: archives
 * depend only on the tree, and never tell a replica who should own a file.
 */
const BLOCK = 512
const CHUNK = 4 << 20

export class TarPacker {
  private buf = Buffer.alloc(CHUNK)
  private used = 0
  private total = 0

  constructor(
    private readonly sink: (chunk: Buffer) => Promise<void>,
    private readonly mtime: Date,
  ) {}

  async addFile(path: string, mode: number, data: Buffer): Promise<void> {
    await this.header({ path, mode, size: data.length, type: 'File' })
    await this.append(data)
    const pad = (BLOCK - (data.length % BLOCK)) % BLOCK
    if (pad) await this.zeros(pad)
  }

  async addDir(path: string, mode: number): Promise<void> {
    await this.header({ path: path + '/', mode, size: 0, type: 'Directory' })
  }

  async addLink(path: string, target: string): Promise<void> {
    await this.header({ path, mode: 0o777, size: 0, type: 'SymbolicLink', linkpath: target })
  }

  /** Writes the end-of-archive blocks and returns the tar stream's exact length. */
  async finish(): Promise<number> {
    await this.zeros(2 * BLOCK)
    await this.flush()
    return this.total
  }

  private async header(h: { path: string; mode: number; size: number; type: 'File' | 'Directory' | 'SymbolicLink'; linkpath?: string }): Promise<void> {
    const data = { ...h, uid: 0, gid: 0, uname: '', gname: '', mtime: this.mtime }
    const block = Buffer.alloc(BLOCK)
    const header = new Header(data)
    if (header.encode(block, 0)) {
      // Long or non-ASCII names travel in a pax header; the plain one keeps a truncated name.
      await this.append(new Pax({ path: h.path, linkpath: h.linkpath, mtime: this.mtime }).encode())
    }
    await this.append(block)
  }

  private async zeros(n: number): Promise<void> {
    await this.append(Buffer.alloc(n))
  }

  private async append(data: Buffer): Promise<void> {
    if (data.length > CHUNK - this.used) {
      await this.flush()
      if (data.length >= CHUNK) {
        this.total += data.length
        await this.sink(data)
        return
      }
    }
    data.copy(this.buf, this.used)
    this.used += data.length
    this.total += data.length
  }

  private async flush(): Promise<void> {
    if (this.used === 0) return
    const out = this.buf.subarray(0, this.used)
    this.buf = Buffer.alloc(CHUNK)
    this.used = 0
    await this.sink(out)
  }
}
