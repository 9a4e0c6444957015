import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, isFerryError, messageOf } from '../errors.js';
import { digestHex, isDigest, type Digest } from '../oci/digest.js';
import type { Layer, OpenOptions } from '../oci/image.js';
import { tempPathFor, writeFileAtomic } from '../io/atomic-file.js';
import { ingestFile } from '../io/ingest.js';
import { compress, type PushCompression } from '../io/layer-compress.js';
import { MeasureDigest } from '../io/verify-digest.js';
import { readdirOrEmpty } from './blobs.js';

/** The store's cache of compressed layer forms, under its root (made by push and serve). */
export const COMPRESSED_CACHE_DIR = join('cache', 'compressed');

/**
 * Compressed forms of layers the store holds only uncompressed (unpacked or raw layers), made
 * once and kept under ROOT/cache/compressed: `ferry serve` needs their digest and size before the first byte
 * (and Range reads), and a second push finds them present by digest. Layout under `dir`:
 *   blobs/sha256/<hex>                       the compressed blob
 *   layers/<gzip|zstd>/<diffId hex>.json     {digest, size} of that layer's compressed form
 *   tars/<key>.json                          {diffId, tarSize} of a tar made anew from unpacked files
 * Blobs enter through io's ingestFile (temp file in tmp/, measured while written, fsync, rename,
 * fsync dir); the record is written after the blob.
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
   * once and remembered under `key` (which must change whenever the tar's content could). A key
   * that ends in `-<chainId hex>` goes with that layer (see prune).
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
    try {
      const blob = await ingestFile((digest) => this.blobPath(digest), compress(await layer.tar(options), compression), {
        tmp: tempPathFor(join(tmpDir, digestHex(layer.diffId))),
        what: `${compression} form of layer ${layer.diffId}`,
        // Compression is deterministic: a blob of that name holds these bytes already.
        ifExists: 'keep',
        dirMode: 0o755,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      await mkdir(join(this.dir, 'layers', compression), { recursive: true });
      await writeFileAtomic(this.recordPath(layer.diffId, compression), `${JSON.stringify({ digest: blob.digest, size: blob.size })}\n`);
      return this.entry(layer.diffId, compression, blob.digest, blob.size);
    } catch (err) {
      if (isFerryError(err) || (err instanceof Error && err.name === 'AbortError')) throw err;
      throw new FerryError('IO_ERROR', `compress layer ${layer.diffId} into ${this.dir}: ${messageOf(err)}`, { cause: err });
    }
  }

  /**
   * Drop what belongs to layers the store no longer has (ferry prune, under the store lock):
   * records of layers whose diffId `keepLayer` refuses, tar measurements whose key ends in the
   * chainId hex of a layer `keepChain` refuses, and the blobs only dropped records named. A blob
   * no record names is left alone: a push or serve may be between writing it and its record.
   * Returns the bytes freed (counted, not freed, on a dry run).
   */
  async prune(keepLayer: (diffId: Digest) => boolean, keepChain: (chainHex: string) => boolean, dryRun = false): Promise<number> {
    const tars = join(this.dir, 'tars');
    // A tar made anew has a diffId of its own: its compressed forms stay while its layer does.
    const regenerated = new Set<Digest>();
    const droppedTars: string[] = [];
    for (const name of await readdirOrEmpty(tars)) {
      const chain = /-([a-f0-9]{64})\.json$/.exec(name)?.[1];
      if (chain === undefined) continue;
      if (!keepChain(chain)) droppedTars.push(join(tars, name));
      else {
        const diffId = await this.readDigestField(join(tars, name), 'diffId');
        if (diffId !== undefined) regenerated.add(diffId);
      }
    }
    const keptBlobs = new Set<Digest>();
    const dropped: Array<{ record: string; blob: Digest | undefined }> = [];
    for (const compression of await readdirOrEmpty(join(this.dir, 'layers'))) {
      for (const name of await readdirOrEmpty(join(this.dir, 'layers', compression))) {
        const record = join(this.dir, 'layers', compression, name);
        const diffId = `sha256:${name.replace(/\.json$/, '')}`;
        const blob = await this.readDigestField(record, 'digest');
        if (isDigest(diffId) && !keepLayer(diffId) && !regenerated.has(diffId)) dropped.push({ record, blob });
        else if (blob !== undefined) keptBlobs.add(blob);
      }
    }
    let freed = 0;
    const gone = new Set<Digest>();
    for (const { record, blob } of dropped) {
      if (!dryRun) await rm(record, { force: true });
      if (blob === undefined || keptBlobs.has(blob) || gone.has(blob)) continue;
      gone.add(blob);
      const st = await stat(this.blobPath(blob)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      });
      freed += st?.size ?? 0;
      if (!dryRun) await rm(this.blobPath(blob), { force: true });
    }
    if (!dryRun) for (const path of droppedTars) await rm(path, { force: true });
    return freed;
  }

  /** A digest field of a small JSON record; undefined when missing or torn (such a record is made again). */
  private async readDigestField(path: string, field: string): Promise<Digest | undefined> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch (err) {
      if (err instanceof SyntaxError) return undefined;
      throw err;
    }
    const value = typeof record === 'object' && record !== null ? (record as Record<string, unknown>)[field] : undefined;
    return typeof value === 'string' && isDigest(value) ? value : undefined;
  }
}
