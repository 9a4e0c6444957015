import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, messageOf } from '../errors.js';
import { digestHex, isDigest, type Digest } from '../oci/digest.js';
import type { Layer, OpenOptions } from '../oci/image.js';
import { syncDir, tempPathFor, writeFileAtomic } from '../io/atomic-file.js';
import { MeasureDigest } from '../io/verify-digest.js';
import { compress, type PushCompression } from './push-target.js';

/**
 * Compressed forms of layers a location holds only uncompressed (the store's unpacked or raw
 * layers), made once and kept: `ferry serve` needs their digest and size before the first byte
 * (and Range reads), and a second push finds them present by digest. Layout under `dir`:
 *   blobs/sha256/<hex>                       the compressed blob
 *   layers/<gzip|zstd>/<diffId hex>.json     {digest, size} of that layer's compressed form
 *   tars/<key>.json                          {diffId, tarSize} of a tar made anew from unpacked files
 * Blobs are written to a temp file, fsynced and renamed; the record is written after the blob.
 */
export interface CompressedLayer {
  diffId: Digest;
  compression: PushCompression;
  digest: Digest;
  size: number;
  /** The blob, or bytes [start, end] of it. */
  open(range?: { start: number; end: number }): Readable;
}

export class CompressedLayerCache {
  readonly dir: string;
  private readonly pending = new Map<string, Promise<CompressedLayer>>();

  constructor(dir: string) {
    this.dir = dir;
  }

  blobPath(digest: Digest): string {
    return join(this.dir, 'blobs', 'sha256', digestHex(digest));
  }

  private recordPath(diffId: Digest, compression: PushCompression): string {
    return join(this.dir, 'layers', compression, `${digestHex(diffId)}.json`);
  }

  private entry(diffId: Digest, compression: PushCompression, digest: Digest, size: number): CompressedLayer {
    const path = this.blobPath(digest);
    return {
      diffId,
      compression,
      digest,
      size,
      open: (range) => (range === undefined ? createReadStream(path) : createReadStream(path, { start: range.start, end: range.end })),
    };
  }

  /** The cached compressed form, when there is one whose blob is complete. */
  async get(diffId: Digest, compression: PushCompression): Promise<CompressedLayer | undefined> {
    let text: string;
    try {
      text = await readFile(this.recordPath(diffId, compression), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let record: { digest?: unknown; size?: unknown };
    try {
      record = JSON.parse(text) as { digest?: unknown; size?: unknown };
    } catch {
      return undefined; // a torn record is made again below, never trusted
    }
    if (typeof record.digest !== 'string' || !isDigest(record.digest) || typeof record.size !== 'number') return undefined;
    const blob = await stat(this.blobPath(record.digest)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (blob?.size !== record.size) return undefined;
    return this.entry(diffId, compression, record.digest, record.size);
  }

  /**
   * diffId and size of a tar that is made anew on each read (from an unpacked layer), measured
   * once and remembered under `key` (which must change whenever the tar's content could).
   */
  async measureTar(key: string, openTar: () => Promise<Readable>): Promise<{ diffId: Digest; tarSize: number }> {
    const path = join(this.dir, 'tars', `${key}.json`);
    try {
      const record = JSON.parse(await readFile(path, 'utf8')) as { diffId?: unknown; tarSize?: unknown };
      if (typeof record.diffId === 'string' && isDigest(record.diffId) && typeof record.tarSize === 'number') return { diffId: record.diffId, tarSize: record.tarSize };
    } catch (err) {
      // Missing or torn: measure again.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
    }
    const measure = new MeasureDigest();
    await pipeline(await openTar(), measure, new Writable({ write: (_chunk, _enc, done) => done() }));
    const out = { diffId: measure.digest, tarSize: measure.size };
    await mkdir(join(this.dir, 'tars'), { recursive: true });
    await writeFileAtomic(path, `${JSON.stringify(out)}\n`);
    return out;
  }

  /** The compressed form of `layer`, compressing its tar into the cache on first use. */
  ensure(layer: Layer, compression: PushCompression, options: OpenOptions = {}): Promise<CompressedLayer> {
    const key = `${compression} ${layer.diffId}`;
    let job = this.pending.get(key);
    if (job === undefined) {
      job = this.make(layer, compression, options).finally(() => this.pending.delete(key));
      this.pending.set(key, job);
    }
    return job;
  }

  private async make(layer: Layer, compression: PushCompression, options: OpenOptions): Promise<CompressedLayer> {
    const cached = await this.get(layer.diffId, compression);
    if (cached !== undefined) return cached;
    const tmpDir = join(this.dir, 'tmp');
    await mkdir(tmpDir, { recursive: true });
    const tmp = tempPathFor(join(tmpDir, digestHex(layer.diffId)));
    const measure = new MeasureDigest();
    try {
      const out = createWriteStream(tmp, { flags: 'wx', mode: 0o644 });
      await pipeline(compress(await layer.tar(options), compression), measure, out, options.signal ? { signal: options.signal } : {});
      const handle = await open(tmp, 'r+');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      const digest = measure.digest;
      const size = measure.size;
      const final = this.blobPath(digest);
      await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
      await rename(tmp, final);
      await syncDir(join(this.dir, 'blobs', 'sha256'));
      await mkdir(join(this.dir, 'layers', compression), { recursive: true });
      await writeFileAtomic(this.recordPath(layer.diffId, compression), `${JSON.stringify({ digest, size })}\n`);
      return this.entry(layer.diffId, compression, digest, size);
    } catch (err) {
      await rm(tmp, { force: true });
      if (err instanceof FerryError || (err instanceof Error && err.name === 'AbortError')) throw err;
      throw new FerryError('IO_ERROR', `compress layer ${layer.diffId} into ${this.dir}: ${messageOf(err)}`, { cause: err });
    }
  }
}
