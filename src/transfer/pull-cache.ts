import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pLimit from 'p-limit';
import { FerryError, messageOf } from '../errors.js';
import { digestHex, type Digest } from '../oci/digest.js';
import { withLayers, type Image, type Layer } from '../oci/image.js';
import { syncDir, tempPathFor, writeFileAtomic } from '../io/atomic-file.js';
import { layerFromBlob } from '../io/layer-forms.js';
import { noProgress, type ProgressListener } from '../io/progress.js';

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

/** How often a blob that arrives damaged is fetched again before the export gives up. */
const MAX_DAMAGED_ATTEMPTS = 3;

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

  /** Stream a verified blob into the cache: temp file, fsync, rename, fsync dir. */
  async put(digest: Digest, source: Readable, onBytes: (n: number) => void): Promise<void> {
    const target = this.blobPath(digest);
    await mkdir(dirname(target), { recursive: true });
    const tmp = tempPathFor(target);
    const handle = await open(tmp, 'wx', 0o644);
    try {
      let position = 0;
      await pipeline(
        source,
        new Writable({
          write(chunk: Buffer, _enc, done) {
            handle.write(chunk, 0, chunk.length, position).then(
              () => {
                position += chunk.length;
                onBytes(chunk.length);
                done();
              },
              (err: unknown) => done(err as Error),
            );
          },
        }),
      );
      await handle.sync();
    } catch (err) {
      await handle.close();
      await rm(tmp, { force: true });
      throw err;
    }
    await handle.close();
    await rename(tmp, target);
    await syncDir(dirname(target));
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
 * Bring every layer blob of `images` into the cache (concurrently, `jobs` at a time), measure each
 * layer's tar once, and return the images with layers that read from the cache.
 */
export async function cacheImages(images: Image[], options: PullCacheOptions): Promise<{ images: Image[]; summary: CacheSummary }> {
  const cache = new PullCache(options.dir);
  const progress = options.onProgress ?? noProgress;
  const limit = pLimit(Math.max(1, options.jobs ?? 4));
  const summary: CacheSummary = { fetched: 0, fetchedBytes: 0, reused: 0, reusedBytes: 0 };
  const unique = new Map<Digest, Layer>();
  for (const image of images) for (const layer of image.layers) unique.set(layer.descriptor.digest, layer);

  const records = new Map<Digest, LayerRecord>();
  await Promise.all(
    [...unique.values()].map((layer) =>
      limit(async () => {
        const { digest, size } = layer.descriptor;
        const id = digest;
        const label = `layer ${digest.slice(7, 19)}`;
        if (await cache.has(digest, size)) {
          summary.reused++;
          summary.reusedBytes += size;
          progress({ kind: 'done', id, label, bytes: size, skipped: true });
        } else {
          progress({ kind: 'start', id, label, total: size });
          try {
            // A blob that arrives damaged is never kept; each blob() call is a fresh fetch, so try again.
            for (let attempt = 1; ; attempt++) {
              try {
                await cache.put(digest, await layer.blob(options.signal ? { signal: options.signal } : {}), (n) =>
                  progress({ kind: 'advance', id, bytes: n }),
                );
                break;
              } catch (err) {
                const damaged = err instanceof FerryError && (err.code === 'DIGEST_MISMATCH' || err.code === 'SIZE_MISMATCH');
                if (!damaged || attempt >= MAX_DAMAGED_ATTEMPTS) throw err;
                progress({ kind: 'note', message: `${label}: ${err.message}; fetching it again` });
              }
            }
          } catch (err) {
            throw new FerryError(
              (err instanceof FerryError ? err.code : 'IO_ERROR'),
              `pull ${label}: ${messageOf(err)}`,
              { cause: err, hint: 'run the export again: blobs already pulled are kept in the cache and not fetched twice' },
            );
          }
          summary.fetched++;
          summary.fetchedBytes += size;
          progress({ kind: 'done', id, label, bytes: size });
        }
        let record = await cache.readRecord(digest);
        if (record === undefined || record.diffId !== layer.diffId) {
          const tarSize = await countBytes(await cachedLayer(cache, layer).tar());
          record = { diffId: layer.diffId, tarSize };
          await cache.writeRecord(digest, record);
        }
        records.set(digest, record);
      }),
    ),
  );

  const cached = images.map((image) =>
    withLayers(
      image,
      image.layers.map((layer) => {
        const record = records.get(layer.descriptor.digest);
        const l = cachedLayer(cache, layer);
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
