import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { FerryError, messageOf } from '../errors.js';
import type { BlobPut, CopyTarget, ImageDestination, LayerPut, ManifestPut, PutOptions } from '../oci/destination.js';
import type { Digest } from '../oci/digest.js';
import type { Image } from '../oci/image.js';
import type { Platform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import { formatReference } from '../oci/reference.js';

/**
 * The one transfer engine: every verb is `copyImages(sources, destination)`. It walks each
 * target's images (config, layers, manifest; then the index; the name last), asks the destination
 * what it has, copies the rest through one concurrency limit, remembers which blobs each scope
 * (registry repository) holds so shared blobs go once and are mounted elsewhere, retries a blob
 * that arrived damaged or whose connection dropped, and stops every copy on the first failure.
 */
export interface CopyOptions {
  /** Blob and layer copies at once (the destination may allow fewer). Default 4. */
  jobs?: number;
  /** Attempts per blob or layer when the source delivers damaged bytes or the network drops. Default 3. */
  attempts?: number;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  onWarning?: (message: string) => void;
}

export interface CopiedImage {
  platform: Platform;
  /** Manifest digest in the source, and as written (differs when layers changed form). */
  sourceDigest: Digest;
  digest: Digest;
}

export interface CopyResult {
  /** The name given, when the target had one. */
  ref: string | undefined;
  images: CopiedImage[];
  /** The index written under the name, when several images went as one. */
  index: Digest | undefined;
  bytesWritten: number;
  bytesPresent: number;
  layersWritten: number;
  layersPresent: number;
  blobsWritten: number;
  blobsPresent: number;
  blobsMounted: number;
  warnings: string[];
}

/** Failures worth another attempt: the source may deliver good bytes the next time. */
const RETRIED = new Set(['DIGEST_MISMATCH', 'SIZE_MISMATCH', 'NETWORK_ERROR']);

export async function copyImages(targets: readonly CopyTarget[], destination: ImageDestination, options: CopyOptions = {}): Promise<CopyResult[]> {
  const slots = pLimit(Math.max(1, Math.min(options.jobs ?? 4, destination.maxConcurrency)));
  const attempts = Math.max(1, options.attempts ?? 3);
  const controller = new AbortController();
  const signal = options.signal === undefined ? controller.signal : AbortSignal.any([options.signal, controller.signal]);
  // Copies still queued when one has failed do not start.
  const limit = <T>(fn: () => Promise<T>): Promise<T> =>
    slots(() => {
      signal.throwIfAborted();
      return fn();
    });
  /** scope + digest -> the copy of that blob there: a blob shared by images goes once. */
  const blobJobs = new Map<string, Promise<BlobPut>>();
  /** The destination's layer key -> the copy of that layer (see ImageDestination.layerKey). */
  const layerJobs = new Map<string, Promise<LayerPut>>();
  /** digest -> scopes known to hold it (mount sources). */
  const homes = new Map<Digest, Set<string>>();
  const home = (digest: Digest, scope: string): void => {
    const set = homes.get(digest) ?? new Set<string>();
    set.add(scope);
    homes.set(digest, set);
  };

  const withRetry = async <T>(what: string, attempt: () => Promise<T>): Promise<T> => {
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        if (signal.aborted || !(err instanceof FerryError) || !RETRIED.has(err.code) || n >= attempts) throw err;
        options.onProgress?.({ kind: 'note', message: `${what}: ${messageOf(err)}; trying again (${n + 1} of ${attempts})` });
      }
    }
  };

  const results: CopyResult[] = [];
  try {
    for (const target of targets) {
      const warnings: string[] = [];
      const scope = destination.scopeOf(target);
      const put: PutOptions = {
        knownAt: (digest) => [...(homes.get(digest) ?? [])].filter((s) => s !== scope),
        signal,
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        onWarning: (m) => {
          warnings.push(m);
          options.onWarning?.(m);
        },
      };
      const result: CopyResult = {
        ref: target.ref === undefined ? undefined : formatReference(target.ref),
        images: [],
        index: undefined,
        bytesWritten: 0,
        bytesPresent: 0,
        layersWritten: 0,
        layersPresent: 0,
        blobsWritten: 0,
        blobsPresent: 0,
        blobsMounted: 0,
        warnings,
      };
      const countBlob = (r: BlobPut, size: number): void => {
        if (r.existed) {
          result.blobsPresent++;
          result.bytesPresent += size;
        } else if (r.mounted === true) result.blobsMounted++;
        else {
          result.blobsWritten++;
          result.bytesWritten += r.written;
        }
      };
      const copyBlob = (kind: 'config' | 'layer', digest: Digest, size: number, bytes: Buffer): Promise<BlobPut> => {
        const key = `${scope} ${digest}`;
        let job = blobJobs.get(key);
        if (job === undefined) {
          job = limit(() =>
            withRetry(`${kind} ${digest}`, () =>
              destination.putBlob(target, { digest, size }, async () => Readable.from([bytes]), { ...put, kind }),
            ),
          ).then((r) => {
            home(digest, scope);
            countBlob(r, size);
            return r;
          });
          blobJobs.set(key, job);
        }
        return job;
      };
      const copyLayers = async (image: Image): Promise<LayerPut[]> => {
        const one = (i: number): Promise<LayerPut> => {
          const key = destination.layerKey(target, image, i);
          const shared = key === undefined ? undefined : layerJobs.get(key);
          if (shared !== undefined) return shared;
          // The slot is taken only by the copy itself: a layer shared with a copy in flight waits outside the limit.
          const job = limit(() =>
            withRetry(`${image.ref === undefined ? image.digest : formatReference(image.ref)} layer ${i} (${image.layers[i]!.descriptor.digest})`, () =>
            destination.putLayer(target, image, i, put),
            )
          ).then((r) => {
            home(r.descriptor.digest, scope);
            if (r.mounted === true) result.blobsMounted++;
            else if (r.existed) result.layersPresent++;
            else result.layersWritten++;
            result.bytesWritten += r.written;
            result.bytesPresent += r.present;
            return r;
          });
          if (key !== undefined) layerJobs.set(key, job);
          return job;
        };
        if (destination.maxConcurrency === 1) {
          // Layers stack on their parents: one after the other, bottom first.
          const out: LayerPut[] = [];
          for (let i = 0; i < image.layers.length; i++) out.push(await one(i));
          return out;
        }
        return Promise.all(image.layers.map((_, i) => one(i)));
      };

      await destination.prepare(target, put);
      const manifests: ManifestPut[] = [];
      const jobs = target.images.map(async (image) => {
        const [layers] = await Promise.all([copyLayers(image), copyBlob('config', image.configDigest, image.rawConfig.length, image.rawConfig)]);
        return destination.putManifest(target, image, layers, put);
      });
      for (const job of jobs) job.catch((err: unknown) => controller.abort(err));
      const settled = await Promise.allSettled(jobs);
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      for (const s of settled) if (s.status === 'fulfilled') manifests.push(s.value);
      result.images = manifests.map((m, i) => ({ platform: target.images[i]!.platform, sourceDigest: m.sourceDigest, digest: m.digest }));
      result.index = await destination.putIndex(target, manifests, put);
      await destination.setRef(target, manifests, result.index, put);
      results.push(result);
    }
  } catch (err) {
    // The first failure stops the other copies in flight; they settle before the destination is released.
    controller.abort(err);
    await Promise.allSettled([...blobJobs.values(), ...layerJobs.values()]);
    await destination.abort();
    throw err;
  }
  await destination.commit();
  return results;
}
