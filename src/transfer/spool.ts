import { randomBytes } from 'node:crypto';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FerryError, messageOf } from '../errors.js';

/**
 * A one-shot stream made replayable: its bytes go to a temp file as they arrive, and any number of
 * readers (an upload, its retry after a dropped connection, a fallback upload to a second
 * repository) read that file from byte 0, following it while it grows. So a blob read once from a
 * bundle stream can be sent again, and reading the bundle never waits for the slowest upload.
 * The file lives only as long as the spool: `dispose()` removes it.
 */
export class Spool {
  readonly path: string;
  /** Resolves with the byte count once the source has ended and every byte is written; rejects with its error. */
  readonly done: Promise<number>;
  private readonly handle: FileHandle;
  private readonly source: Readable;
  private written = 0;
  private ended = false;
  private failure: Error | undefined;
  private waiters: Array<() => void> = [];
  private readonly readers = new Set<Readable>();
  private disposed = false;

  private constructor(path: string, handle: FileHandle, source: Readable) {
    this.path = path;
    this.handle = handle;
    this.source = source;
    this.done = this.pump();
    // A failure is seen by readers and by whoever awaits `done`; never an unhandled rejection.
    this.done.catch(() => undefined);
  }

  /** Start spooling `source` into a new file under `dir`. */
  static async create(source: Readable, dir: string, label = 'blob'): Promise<Spool> {
    await mkdir(dir, { recursive: true });
    const path = join(dir, `spool-${process.pid}-${randomBytes(6).toString('hex')}-${label.replace(/[^\w.-]/g, '_').slice(0, 40)}`);
    let handle: FileHandle;
    try {
      handle = await open(path, 'wx+', 0o600);
    } catch (err) {
      source.destroy();
      throw new FerryError('IO_ERROR', `create spool file ${path}: ${messageOf(err)}`, { cause: err, hint: 'choose a writable temporary directory (--tmp-dir or $TMPDIR)' });
    }
    return new Spool(path, handle, source);
  }

  get size(): number {
    return this.written;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private async pump(): Promise<number> {
    try {
      for await (const chunk of this.source as AsyncIterable<Buffer>) {
        let offset = 0;
        while (offset < chunk.length) {
          const { bytesWritten } = await this.handle.write(chunk, offset, chunk.length - offset, this.written);
          offset += bytesWritten;
          this.written += bytesWritten;
        }
        this.wake();
      }
      this.ended = true;
      this.wake();
      return this.written;
    } catch (err) {
      this.failure = err instanceof Error ? err : new Error(String(err));
      this.wake();
      throw this.failure;
    }
  }

  /** A reader from byte 0; it follows the file until the source has ended (or fails with the source). */
  open(): Readable {
    if (this.disposed) throw new FerryError('IO_ERROR', `spool ${this.path}: read after it was removed`);
    const read = async function* (this: Spool): AsyncGenerator<Buffer> {
      let position = 0;
      for (;;) {
        if (this.disposed) return;
        if (position < this.written) {
          const n = Math.min(this.written - position, 1 << 20);
          const buffer = Buffer.allocUnsafe(n);
          const { bytesRead } = await this.handle.read(buffer, 0, n, position);
          if (bytesRead === 0) throw new FerryError('IO_ERROR', `spool ${this.path}: the file is shorter than what was written`);
          position += bytesRead;
          yield buffer.subarray(0, bytesRead);
          continue;
        }
        if (this.failure !== undefined) throw this.failure;
        if (this.ended) return;
        await new Promise<void>((resolve) => this.waiters.push(resolve));
      }
    }.bind(this);
    const reader = Readable.from(read(), { objectMode: false });
    this.readers.add(reader);
    reader.once('close', () => this.readers.delete(reader));
    return reader;
  }

  /** Stop reading the source, end every reader, remove the file. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const reader of this.readers) {
      // Torn down on purpose: a read in flight may still fail on the closing file; nobody wants it.
      reader.on('error', () => undefined);
      reader.destroy();
    }
    if (!this.ended) this.source.destroy();
    this.wake();
    await this.done.catch(() => undefined);
    await this.handle.close();
    await rm(this.path, { force: true });
  }
}
