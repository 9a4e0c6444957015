import { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { BLOCK, decodeTarHeader, isZeroBlock, parsePaxRecords } from './tar-header.js';

/**
 * Pulls exact byte counts out of a stream of chunks, so a tar can be parsed as it streams:
 * nothing is buffered beyond the chunk in hand, and backpressure is the consumer's pace.
 */
export class ChunkReader {
  private readonly source: AsyncIterator<Buffer>;
  private pending: Buffer | undefined;
  private ended = false;
  /** Bytes consumed so far: the offset in the tar stream, for errors. */
  offset = 0;

  constructor(source: AsyncIterable<Buffer>) {
    this.source = source[Symbol.asyncIterator]();
  }

  /** The next chunk of at most `max` bytes, or undefined at the end of the stream. */
  async next(max: number): Promise<Buffer | undefined> {
    if (this.pending === undefined || this.pending.length === 0) {
      if (this.ended) return undefined;
      const r = await this.source.next();
      if (r.done === true) {
        this.ended = true;
        return undefined;
      }
      this.pending = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
    }
    const chunk = this.pending.length <= max ? this.pending : this.pending.subarray(0, max);
    this.pending = this.pending.length <= max ? undefined : this.pending.subarray(max);
    this.offset += chunk.length;
    return chunk;
  }

  /** Exactly `n` bytes; undefined when the stream ends before the first byte; throws when it ends midway. */
  async read(n: number, what: string): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      const chunk = await this.next(n - got);
      if (chunk === undefined) {
        if (got === 0) return undefined;
        throw truncated(what, this.offset);
      }
      parts.push(chunk);
      got += chunk.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** Discard `n` bytes. */
  async skip(n: number, what: string): Promise<void> {
    let left = n;
    while (left > 0) {
      const chunk = await this.next(left);
      if (chunk === undefined) throw truncated(what, this.offset);
      left -= chunk.length;
    }
  }

  /** Stop the underlying stream (a reader that only wanted the start). */
  async close(): Promise<void> {
    this.ended = true;
    this.pending = undefined;
    await this.source.return?.();
  }
}

function truncated(what: string, offset: number): FerryError {
  return new FerryError('BUNDLE_INVALID', `${what}: the stream ends early (after ${offset} bytes of tar)`, {
    hint: 'the bundle is truncated: copy it (every volume) again',
  });
}

export interface TarEntry {
  name: string;
  type: 'file' | 'directory';
  size: number;
}

function padTo(size: number): number {
  const rest = size % BLOCK;
  return rest === 0 ? 0 : BLOCK - rest;
}

function normaliseName(name: string): string {
  let n = name;
  while (n.startsWith('./')) n = n.slice(2);
  return n;
}

/**
 * Reads tar entries one at a time. `nextEntry()` returns the next file or directory header;
 * the caller then reads its body with `body()` (or leaves it, and the next call skips it).
 * Only regular files and directories are accepted: a bundle has nothing else.
 */
export class TarReader {
  private readonly reader: ChunkReader;
  private readonly what: string;
  /** Body bytes of the current entry not yet consumed, and its padding. */
  private remaining = 0;
  private pad = 0;
  private bodyOpen = false;

  constructor(reader: ChunkReader, what: string) {
    this.reader = reader;
    this.what = what;
  }

  get offset(): number {
    return this.reader.offset;
  }

  async nextEntry(): Promise<TarEntry | undefined> {
    if (this.bodyOpen) {
      throw new FerryError('BUNDLE_INVALID', `${this.what}: internal error: the next tar entry was requested while an entry body was still being read`);
    }
    await this.reader.skip(this.remaining + this.pad, this.what);
    this.remaining = 0;
    this.pad = 0;
    let paxPath: string | undefined;
    let paxSize: number | undefined;
    let longName: string | undefined;
    for (;;) {
      const block = await this.reader.read(BLOCK, this.what);
      if (block === undefined || isZeroBlock(block)) return undefined;
      const header = decodeTarHeader(block);
      if (header === undefined) {
        throw new FerryError('BUNDLE_INVALID', `${this.what}: bad tar header at byte ${this.reader.offset - BLOCK}`, {
          hint: 'the bundle is damaged: copy it again (ferry verify names a damaged volume)',
        });
      }
      if (header.typeflag === 'x' || header.typeflag === 'g' || header.typeflag === 'L') {
        if (header.size > 1024 * 1024) throw new FerryError('BUNDLE_INVALID', `${this.what}: oversized tar extension header (${header.size} bytes)`);
        const data = (await this.reader.read(header.size, this.what)) ?? Buffer.alloc(0);
        await this.reader.skip(padTo(header.size), this.what);
        if (header.typeflag === 'x') {
          const records = parsePaxRecords(data);
          paxPath = records.get('path') ?? paxPath;
          const s = records.get('size');
          if (s !== undefined) paxSize = Number.parseInt(s, 10);
        } else if (header.typeflag === 'L') {
          longName = data.toString('utf8').replace(/\0+$/, '');
        }
        continue;
      }
      const name = normaliseName(paxPath ?? longName ?? header.name);
      const size = paxSize ?? header.size;
      if (!Number.isSafeInteger(size) || size < 0) throw new FerryError('BUNDLE_INVALID', `${this.what}: entry ${name}: bad size`);
      if (header.typeflag === '5') {
        this.remaining = 0;
        this.pad = 0;
        return { name, type: 'directory', size: 0 };
      }
      if (header.typeflag !== '0' && header.typeflag !== '\0' && header.typeflag !== '7') {
        throw new FerryError('BUNDLE_INVALID', `${this.what}: entry ${name} has tar type "${header.typeflag}"; a bundle holds only files and directories`, {
          hint: 'this is not a bundle ferry wrote; refuse it',
        });
      }
      this.remaining = size;
      this.pad = padTo(size);
      return { name, type: 'file', size };
    }
  }

  /** The whole body of the current entry, for small entries (header, index.json), capped at `max`. */
  async readBody(max: number): Promise<Buffer> {
    if (this.remaining > max) {
      throw new FerryError('BUNDLE_INVALID', `${this.what}: tar entry of ${this.remaining} bytes is over the ${max}-byte limit for it`);
    }
    const n = this.remaining;
    const data = n === 0 ? Buffer.alloc(0) : await this.reader.read(n, this.what);
    if (data === undefined) throw truncated(this.what, this.reader.offset);
    this.remaining = 0;
    return data;
  }

  /**
   * The body of the current entry as chunks, read as the consumer pulls them. Left unfinished,
   * the rest is skipped by the next `nextEntry()`.
   */
  async *bodyChunks(): AsyncGenerator<Buffer> {
    this.bodyOpen = true;
    try {
      while (this.remaining > 0) {
        const chunk = await this.reader.next(Math.min(this.remaining, 1024 * 1024));
        if (chunk === undefined) throw truncated(this.what, this.reader.offset);
        this.remaining -= chunk.length;
        yield chunk;
      }
    } finally {
      this.bodyOpen = false;
    }
  }

  async close(): Promise<void> {
    await this.reader.close();
  }
}

/** A Readable over an async iterator of chunks that pulls only when read (no eager prefetch). */
export class LazyReadable extends Readable {
  private readonly chunks: () => AsyncGenerator<Buffer>;
  private it: AsyncGenerator<Buffer> | undefined;

  constructor(chunks: () => AsyncGenerator<Buffer>) {
    super();
    this.chunks = chunks;
  }

  /** Has anyone read from it yet? */
  get started(): boolean {
    return this.it !== undefined;
  }

  override _read(): void {
    this.it ??= this.chunks();
    this.it.next().then(
      (r) => {
        if (r.done === true) this.push(null);
        else this.push(r.value);
      },
      (err: unknown) => this.destroy(err as Error),
    );
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.it === undefined) {
      cb(err);
      return;
    }
    // Returning the generator runs its `finally`: the tar reader learns the body was abandoned.
    this.it.return(undefined).then(
      () => cb(err),
      (e: unknown) => cb(err ?? (e as Error)),
    );
  }
}
