import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError, messageOf } from '../errors.js';
import { digestHex, type Digest } from '../oci/digest.js';
import { withLayers, type Image, type Layer } from '../oci/image.js';
import { writeFileAtomic } from '../io/atomic-file.js';
import { ingestFile } from '../io/ingest.js';
import { layerFromBlob } from '../io/layer-forms.js';
import { noProgress, type ProgressListener } from '../io/progress.js';
import type { BlobPut, CopyTarget, ImageDestination, LayerPut, ManifestPut, PutOptions } from '../oci/destination.js';
import { copyImages } from './copy-images.js';

/**
 * A content-addressed cache of pulled blobs, so an interrupted export run again fetches only what
 * it lacks. Blobs enter verified (the source layer's blob() checks the digest) and are renamed into
 * place only when complete; beside each layer blob a small record keeps its diffId and tar size,
 * measured once, because the bundle needs the tar size before it writes the layer.
 */
export interface PullCacheOptions {
  dir: string;
  jobs?: number;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
}

interface LayerRecord {
  diffId: Digest;
  tarSize: number;
}

export function defaultCacheDir(): string {
  if (process.env.FERRY_CACHE_DIR) return process.env.FERRY_CACHE_DIR;
  if (process.getuid?.() === 0) return '/var/cache/ferry';
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'ferry');
}

export class PullCache {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  blobPath(digest: Digest): string {
    return join(this.dir, 'blobs', digest.slice(0, digest.indexOf(':')), digestHex(digest));
  }

  private recordPath(digest: Digest): string {
    return `${this.blobPath(digest)}.layer.json`;
  }

  async has(digest: Digest, size: number): Promise<boolean> {
    try {
      return (await stat(this.blobPath(digest))).size === size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * Stream a blob into the cache (io's ingestFile): temp file, fsync, rename, fsync dir. The
   * source is a layer's blob(), verified as it streams: a damaged one fails with DIGEST_MISMATCH
   * at its end and leaves nothing.
   */
  async put(digest: Digest, source: Readable, onBytes: (n: number) => void): Promise<void> {
    // The source is a layer's blob(), which verifies the digest as it streams (and fails at its end).
    await ingestFile(this.blobPath(digest), source, { digest, sourceVerifies: true, onBytes, dirMode: 0o755, what: `cached blob ${digest}` });
  }

  async readRecord(digest: Digest): Promise<LayerRecord | undefined> {
    try {
      const v = JSON.parse(await readFile(this.recordPath(digest), 'utf8')) as Partial<LayerRecord>;
      if (typeof v.diffId === 'string' && typeof v.tarSize === 'number') return { diffId: v.diffId, tarSize: v.tarSize };
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || err instanceof SyntaxError) return undefined;
      throw err;
    }
  }

  async writeRecord(digest: Digest, record: LayerRecord): Promise<void> {
    await writeFileAtomic(this.recordPath(digest), JSON.stringify(record));
  }
}

/** Count the bytes of a stream, draining it (the stream itself verifies what it carries). */
async function countBytes(stream: Readable): Promise<number> {
  let n = 0;
  for await (const chunk of stream) n += (chunk as Buffer).length;
  return n;
}

export interface CacheSummary {
  /** Blobs fetched from the source in this run. */
  fetched: number;
  fetchedBytes: number;
  /** Blobs the cache already had. */
  reused: number;
  reusedBytes: number;
}

/**
 * The pull cache as a copy destination: each layer blob enters verified (the source layer's
 * blob() checks the digest) and is renamed into place only when complete; its tar is measured
 * once and the record kept beside it. Configs and manifests travel with the image, not here.
 */
export class PullCacheDestination implements ImageDestination {
  readonly name: string;
  readonly maxConcurrency = Number.POSITIVE_INFINITY;
  /** Layer blob digest -> its diffId and tar size, as recorded. */
  readonly records = new Map<Digest, LayerRecord>();

  constructor(readonly cache: PullCache) {
    this.name = `pull cache ${cache.dir}`;
  }

  scopeOf(): string {
    return '';
  }

  layerKey(_target: CopyTarget, image: Image, index: number): string {
    return image.layers[index]!.descriptor.digest;
  }

  async prepare(): Promise<void> {}

  async hasBlob(): Promise<boolean> {
    return true;
  }

  /** Configs and manifests are small and travel with the image: nothing to keep here. */
  async putBlob(): Promise<BlobPut> {
    return { written: 0, existed: true };
  }

  async putLayer(_target: CopyTarget, image: Image, index: number, options: PutOptions): Promise<LayerPut> {
    const layer = image.layers[index]!;
    const { digest, size } = layer.descriptor;
    const id = digest;
    const label = `layer ${digest.slice(7, 19)}`;
    const progress = options.onProgress ?? noProgress;
    const existed = await this.cache.has(digest, size);
    if (existed) progress({ kind: 'done', id, label, bytes: size, skipped: true });
    else {
      progress({ kind: 'start', id, label, total: size });
      try {
        await this.cache.put(digest, await layer.blob(options.signal ? { signal: options.signal } : {}), (n) => progress({ kind: 'advance', id, bytes: n }));
      } catch (err) {
        // The code stays (a damaged blob is fetched again by the engine); the message names the layer.
        throw new FerryError(err instanceof FerryError ? err.code : 'IO_ERROR', `pull ${label}: ${messageOf(err)}`, {
          cause: err,
          hint: 'run it again: blobs already pulled are kept in the cache and not fetched twice',
        });
      }
      progress({ kind: 'done', id, label, bytes: size });
    }
    let record = await this.cache.readRecord(digest);
    if (record === undefined || record.diffId !== layer.diffId) {
      const tarSize = await countBytes(await cachedLayer(this.cache, layer).tar());
      record = { diffId: layer.diffId, tarSize };
      await this.cache.writeRecord(digest, record);
    }
    this.records.set(digest, record);
    return { descriptor: layer.descriptor, existed, written: existed ? 0 : size, present: existed ? size : 0 };
  }

  async putManifest(_target: CopyTarget, image: Image): Promise<ManifestPut> {
    return { digest: image.digest, mediaType: image.mediaType, size: image.rawManifest.length, sourceDigest: image.digest };
  }

  async putIndex(): Promise<undefined> {
    return undefined;
  }

  async setRef(): Promise<void> {}

  async commit(): Promise<void> {}

  /** Blobs renamed into place stay: a rerun finds them. */
  async abort(): Promise<void> {}
}

/**
 * Bring every layer blob of `images` into the cache (the transfer engine, `jobs` at a time), measure
 * each layer's tar once, and return the images with layers that read from the cache.
 */
export async function cacheImages(images: Image[], options: PullCacheOptions): Promise<{ images: Image[]; summary: CacheSummary }> {
  const destination = new PullCacheDestination(new PullCache(options.dir));
  const results = await copyImages(
    images.map((image) => ({ ref: undefined, images: [image] })),
    destination,
    {
      jobs: Math.max(1, options.jobs ?? 4),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    },
  );
  const summary: CacheSummary = { fetched: 0, fetchedBytes: 0, reused: 0, reusedBytes: 0 };
  for (const r of results) {
    summary.fetched += r.layersWritten;
    summary.fetchedBytes += r.bytesWritten;
    summary.reused += r.layersPresent;
    summary.reusedBytes += r.bytesPresent;
  }
  const cached = images.map((image) =>
    withLayers(
      image,
      image.layers.map((layer) => {
        const record = destination.records.get(layer.descriptor.digest);
        const l = cachedLayer(destination.cache, layer);
        return record ? { ...l, tarSize: record.tarSize } : l;
      }),
    ),
  );
  return { images: cached, summary };
}

function cachedLayer(cache: PullCache, layer: Layer): Layer {
  return layerFromBlob({
    descriptor: layer.descriptor,
    diffId: layer.diffId,
    what: `cached layer`,
    openBlob: async () => createReadStream(cache.blobPath(layer.descriptor.digest)),
  });
}
