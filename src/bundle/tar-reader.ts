import { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { TarReader, type TarProblem } from '../io/tar-reader.js';

/**
 * The bundle's policy over io's tar reader: a bundle holds only regular files and directories,
 * may end without the end-of-archive marker (a missing blob is found against the header), and
 * every problem is a BUNDLE_INVALID naming the bundle.
 */

export interface TarEntry {
  name: string;
  type: 'file' | 'directory';
  size: number;
}

function truncated(what: string, offset: number): FerryError {
  return new FerryError('BUNDLE_INVALID', `${what}: the stream ends early (after ${offset} bytes of tar)`, {
    hint: 'the bundle is truncated: copy it (every volume) again',
  });
}

function bundleTarError(what: string): (problem: TarProblem) => FerryError {
  return (problem) => {
    switch (problem.kind) {
      case 'truncated':
        return truncated(what, problem.offset);
      case 'checksum':
      case 'field':
        return new FerryError('BUNDLE_INVALID', `${what}: bad tar header at byte ${problem.header}`, {
          hint: 'the bundle is damaged: copy it again (ferry verify names a damaged volume)',
        });
      case 'limit':
        return problem.part === 'extended'
          ? new FerryError('BUNDLE_INVALID', `${what}: oversized tar extension header (${problem.size} bytes)`)
          : new FerryError('BUNDLE_INVALID', `${what}: tar entry of ${problem.size} bytes is over the ${problem.limit}-byte limit for it`);
      default:
        return new FerryError('BUNDLE_INVALID', `${what}: invalid tar at byte ${problem.header}: ${problem.why}`, {
          hint: 'the bundle is damaged: copy it again (ferry verify names a damaged volume)',
        });
    }
  };
}

function normaliseName(name: string): string {
  let n = name;
  while (n.startsWith('./')) n = n.slice(2);
  return n;
}

/**
 * Reads a bundle's tar entries one at a time. `nextEntry()` returns the next file or directory;
 * the caller then reads its body with `readBody()` or `bodyChunks()` (or leaves it, and the next
 * call skips it).
 */
export class BundleTarReader {
  private readonly tar: TarReader;
  private readonly what: string;

  constructor(stream: AsyncIterable<unknown>, what: string) {
    this.what = what;
    this.tar = new TarReader(stream, { what, end: 'lenient', error: bundleTarError(what) });
  }

  get offset(): number {
    return this.tar.offset;
  }

  async nextEntry(): Promise<TarEntry | undefined> {
    const entry = await this.tar.next();
    if (entry === undefined) return undefined;
    const name = normaliseName(entry.name.toString('utf8'));
    if (entry.type === 'dir') return { name, type: 'directory', size: 0 };
    if (entry.type !== 'file') {
      throw new FerryError('BUNDLE_INVALID', `${this.what}: entry ${name} has tar type "${entry.typeflag}"; a bundle holds only files and directories`, {
        hint: 'this is not a bundle ferry wrote; refuse it',
      });
    }
    return { name, type: 'file', size: entry.size };
  }

  /** The whole body of the current entry, for small entries (header, index.json), capped at `max`. */
  readBody(max: number): Promise<Buffer> {
    return this.tar.readBody(max);
  }

  /**
   * The body of the current entry as chunks, read as the consumer pulls them. Left unfinished,
   * the rest is skipped by the next `nextEntry()`.
   */
  bodyChunks(): AsyncGenerator<Buffer> {
    return this.tar.body();
  }

  async close(): Promise<void> {
    await this.tar.close();
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
