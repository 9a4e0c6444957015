import { createReadStream, createWriteStream, writeFileSync } from 'node:fs';
import { constants as fsConstants, open, rm } from 'node:fs/promises';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import { chain } from '../io/layer-forms.js';
import { zstdCompress, zstdCompressStream, zstdDecompressStream } from '../io/zstd.js';

/**
 * tar-split, as containers/storage keeps it: the layer tar minus its regular-file bodies, so the
 * store can give back the ORIGINAL tar (same bytes, same diffId) from the unpacked files.
 *
 * File `layers/<id>/tar-split.zst`, zstd over records:
 *   magic "FTSPLIT1"
 *   0x01 raw:  u32 length, bytes     (headers, extended headers, padding, skipped bodies, end, trailer)
 *   0x02 file: u16 path length, path (raw bytes, relative to diff/), u48 size
 *   0x00 end:  u48 total tar size
 * A split is written only when every referenced file still holds its tar body when unpack ends;
 * otherwise (a path written twice, a file removed by a later entry) the layer is marked not
 * reproducible and no split is kept, never one that cannot reproduce.
 */

const MAGIC = Buffer.from('FTSPLIT1', 'latin1');
const RAW = 0x01;
const FILE = 0x02;
const END = 0x00;
/** Raw bytes are gathered up to this before a record is written. */
const RAW_CHUNK = 256 * 1024;
const FILE_CHUNK = 1024 * 1024;
/**
 * A split up to this size (most layers: a few KB of headers) is kept in memory and compressed in
 * one call when the tar ends; a larger one streams to its file from then on. A compression stream
 * per layer cost ~5 ms and megabytes of external memory each (garbage collections every few
 * layers): most of the per-layer time of importing hundreds of small layers.
 */
const IN_MEMORY_MAX = 1024 * 1024;

/** Records a tar's skeleton while it is unpacked; see the module comment. */
export class TarSplitRecorder {
  /** The compression stream to the file, once the split outgrew IN_MEMORY_MAX. */
  private out: Transform | undefined;
  private written: Promise<void> | undefined;
  private writeError: unknown;
  /** Raw bytes not yet in a record (copies: the reader's buffers are not ours to keep). */
  private raw: Buffer[] = [];
  private rawLength = 0;
  /** Records not yet handed to the compressor: one write per ~RAW_CHUNK, not two per file (each is a native call). */
  private batch: Buffer[] = [MAGIC];
  private batchBytes = MAGIC.length;
  private total = 0;
  /** Keys (latin1 paths) of the files referenced, to notice when one is replaced or removed. */
  private readonly files = new Set<string>();
  /** Why the split cannot reproduce the tar, once known. */
  private why: string | undefined;
  readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  /** Bytes of the tar that are kept as they are (TarReaderOptions.skeleton). */
  readonly skeleton = (bytes: Buffer): void => {
    this.total += bytes.length;
    if (this.why !== undefined) return;
    let at = 0;
    while (at < bytes.length) {
      const n = Math.min(bytes.length - at, RAW_CHUNK - this.rawLength);
      this.raw.push(Buffer.from(bytes.subarray(at, at + n)));
      this.rawLength += n;
      at += n;
      if (this.rawLength === RAW_CHUNK) this.flushRaw();
    }
  };

  /** The next `size` bytes of the tar are the body of the file at `key` (components joined by '/', latin1). */
  file(key: string, size: number): void {
    this.total += size;
    if (this.why !== undefined) return;
    if (this.files.has(key)) {
      this.notReproducible(`"${key}" is written twice`);
      return;
    }
    this.files.add(key);
    this.flushRaw();
    const path = Buffer.from(key, 'latin1');
    const record = Buffer.allocUnsafe(1 + 2 + path.length + 6);
    record[0] = FILE;
    record.writeUInt16BE(path.length, 1);
    path.copy(record, 3);
    record.writeUIntBE(size, 3 + path.length, 6);
    this.queue(record);
  }

  /** The unpacker removes what is at `key` (and below it): a referenced file there loses its body. */
  removed(key: string): void {
    if (this.why !== undefined || this.files.size === 0) return;
    if (this.files.has(key)) {
      this.notReproducible(`"${key}" is replaced by a later entry`);
      return;
    }
    const prefix = `${key}/`;
    for (const k of this.files) {
      if (k.startsWith(prefix)) {
        this.notReproducible(`"${k}" is removed by a later entry`);
        return;
      }
    }
  }

  notReproducible(why: string): void {
    if (this.why !== undefined) return;
    this.why = why;
    // Nothing more is recorded: drop what was gathered.
    this.raw = [];
    this.rawLength = 0;
    this.batch = [];
    this.batchBytes = 0;
  }

  private flushRaw(): void {
    if (this.rawLength === 0) return;
    const head = Buffer.allocUnsafe(5);
    head[0] = RAW;
    head.writeUInt32BE(this.rawLength, 1);
    this.queue(Buffer.concat([head, ...this.raw], 5 + this.rawLength));
    this.raw = [];
    this.rawLength = 0;
  }

  private queue(record: Buffer): void {
    this.batch.push(record);
    this.batchBytes += record.length;
    if (this.out !== undefined ? this.batchBytes >= RAW_CHUNK : this.batchBytes > IN_MEMORY_MAX) this.writeBatch();
  }

  /** Hand the gathered records to the compression stream, started on first use. */
  private writeBatch(): void {
    if (this.batchBytes === 0) return;
    if (this.out === undefined) {
      const out = zstdCompressStream({ level: 3 });
      this.out = out;
      this.written = pipeline(out, createWriteStream(this.path, { mode: 0o600 })).catch((err: unknown) => {
        this.writeError = err;
      });
    }
    this.out.write(this.batch.length === 1 ? this.batch[0]! : Buffer.concat(this.batch, this.batchBytes));
    this.batch = [];
    this.batchBytes = 0;
  }

  /**
   * Finish after the whole tar was read and unpacked: the split is complete on disk, or removed
   * when it cannot reproduce the tar. `size`: bytes of the tar as measured, which the split must hold.
   */
  async finish(size: number): Promise<{ kept: true } | { kept: false; why: string }> {
    if (this.why === undefined && this.total !== size) this.notReproducible(`it holds ${this.total} of the tar's ${size} bytes`);
    if (this.why === undefined) {
      this.flushRaw();
      const end = Buffer.alloc(7);
      end[0] = END;
      end.writeUIntBE(this.total, 1, 6);
      this.queue(end);
      if (this.out === undefined) {
        // Still in memory: one frame, one write.
        // One write of a few KB, synchronous as the unpacker's own file writes (see unpack.ts).
        writeFileSync(this.path, zstdCompress(Buffer.concat(this.batch, this.batchBytes), 3), { mode: 0o600 });
        this.batch = [];
        this.batchBytes = 0;
        return { kept: true };
      }
      this.writeBatch();
    }
    if (this.out === undefined) return { kept: false, why: this.why! };
    this.out.end();
    await this.written;
    if (this.writeError !== undefined) throw this.writeError;
    if (this.why === undefined) return { kept: true };
    await rm(this.path, { force: true });
    return { kept: false, why: this.why };
  }

  /** After an error: stop writing (the caller removes the staging directory). */
  async abort(): Promise<void> {
    this.out?.destroy();
    await this.written;
  }
}

function corrupt(what: string, why: string): FerryError {
  return new FerryError('STORE_ERROR', `${what}: tar-split is damaged: ${why}`, {
    hint: 'ferry fsck --deep checks every layer; import the image again to restore it',
  });
}

/** Pulls exact byte counts out of the decompressed split. */
class Records {
  private readonly iterator: AsyncIterator<Buffer>;
  private buf: Buffer = Buffer.alloc(0);

  constructor(stream: Readable) {
    this.iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  async take(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n) {
      const next = await this.iterator.next();
      if (next.done === true) return undefined;
      this.buf = this.buf.length === 0 ? next.value : Buffer.concat([this.buf, next.value]);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async close(): Promise<void> {
    await this.iterator.return?.();
  }
}

/**
 * The layer's original tar, from its split and the files in `diffDir` (unverified: the caller
 * checks the diffId while streaming). Files are opened with O_NOFOLLOW and must be regular files
 * of exactly the recorded size.
 */
export function reproduceLayerTar(splitPath: string, diffDir: string, what: string): Readable {
  return Readable.from(reproduce(splitPath, diffDir, what), { objectMode: false });
}

async function* reproduce(splitPath: string, diffDir: string, what: string): AsyncGenerator<Buffer> {
  const records = new Records(chain(createReadStream(splitPath), zstdDecompressStream()));
  const need = async (n: number): Promise<Buffer> => {
    const b = await records.take(n);
    if (b === undefined) throw corrupt(what, 'it ends early');
    return b;
  };
  try {
    if (!(await need(MAGIC.length)).equals(MAGIC)) throw corrupt(what, 'not a ferry tar-split');
    const base = Buffer.from(`${diffDir}/`);
    let total = 0;
    for (;;) {
      const type = (await need(1))[0];
      if (type === RAW) {
        const length = (await need(4)).readUInt32BE(0);
        const bytes = Buffer.from(await need(length));
        total += length;
        yield bytes;
      } else if (type === FILE) {
        const pathLength = (await need(2)).readUInt16BE(0);
        const rel = Buffer.from(await need(pathLength));
        const size = (await need(6)).readUIntBE(0, 6);
        yield* fileBody(Buffer.concat([base, rel]), rel, size, what);
        total += size;
      } else if (type === END) {
        const size = (await need(6)).readUIntBE(0, 6);
        if (size !== total) throw corrupt(what, `it records ${size} bytes but holds ${total}`);
        if ((await records.take(1)) !== undefined) throw corrupt(what, 'data after its end');
        return;
      } else {
        throw corrupt(what, `unknown record type ${String(type)}`);
      }
    }
  } finally {
    await records.close();
  }
}

async function* fileBody(path: Buffer, rel: Buffer, size: number, what: string): AsyncGenerator<Buffer> {
  const name = rel.toString('utf8');
  const changed = (why: string): FerryError =>
    new FerryError('DIGEST_MISMATCH', `${what}: file "${name}" in the unpacked layer ${why}, so the original tar cannot be reproduced`, {
      hint: 'the unpacked layer was changed after import; ferry fsck --repair removes it, then import the image again',
    });
  let handle;
  try {
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP') throw changed(code === 'ENOENT' ? 'is missing' : 'is now a symlink');
    throw err;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw changed('is no longer a regular file');
    if (st.size !== size) throw changed(`has ${st.size} bytes, not ${size}`);
    let at = 0;
    while (at < size) {
      const buf = Buffer.allocUnsafe(Math.min(FILE_CHUNK, size - at));
      let got = 0;
      while (got < buf.length) {
        const { bytesRead } = await handle.read(buf, got, buf.length - got, at + got);
        if (bytesRead === 0) throw changed(`ends after ${at + got} of ${size} bytes`);
        got += bytesRead;
      }
      at += got;
      yield buf;
    }
  } finally {
    await handle.close();
  }
}
