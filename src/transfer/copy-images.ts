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
  /** Where a layer's bytes pass in a one-pass source: a destination that copies one at a time takes them in this order. */
  order?: (image: Image, index: number) => number;
  /** After every blob is copied, before any manifest or name: a one-pass source reads to its end and checks it. */
  beforeNames?: () => Promise<void>;
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

/** Images in flight per copy slot in a wave (see `bounded`). */
const IN_FLIGHT_PER_SLOT = 4;

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
  /** How many scopes the targets span (known once their contexts are made); with one there is nowhere to mount from. */
  let scopes = 0;
  const home = (digest: Digest, scope: string): void => {
    if (scopes < 2) return;
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

  interface Context {
    target: CopyTarget;
    scope: string;
    result: CopyResult;
    /** The layers as put, per image (in the target's order). */
    layers: LayerPut[][];
    manifests: ManifestPut[];
  }
  const contextOf = (target: CopyTarget): Context => {
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
      warnings: [],
    };
    return { target, scope: destination.scopeOf(target), result, layers: [], manifests: [] };
  };
  /** A target's options for one destination call: made per call, not held per target (a bundle has thousands). */
  const putOf = (ctx: Context): PutOptions => ({
    knownAt: (digest) => [...(homes.get(digest) ?? [])].filter((s) => s !== ctx.scope),
    signal,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    onWarning: (m) => {
      ctx.result.warnings.push(m);
      options.onWarning?.(m);
    },
  });

  const copyConfig = (ctx: Context, image: Image): Promise<BlobPut> => {
    const digest = image.configDigest;
    const size = image.rawConfig.length;
    const bytes = image.rawConfig;
    // With one scope (a store, a bundle) the digest alone: no key string per blob.
    const key = ctx.scope === '' ? digest : `${ctx.scope} ${digest}`;
    let job = blobJobs.get(key);
    if (job === undefined) {
      job = limit(() => withRetry(`config ${digest}`, () => destination.putBlob(ctx.target, { digest, size }, async () => Readable.from([bytes]), { ...putOf(ctx), kind: 'config' }))).then((r) => {
        home(digest, ctx.scope);
        const { result } = ctx;
        if (r.existed) {
          result.blobsPresent++;
          result.bytesPresent += size;
        } else if (r.mounted === true) result.blobsMounted++;
        else {
          result.blobsWritten++;
          result.bytesWritten += r.written;
        }
        return r;
      });
      blobJobs.set(key, job);
    }
    return job;
  };

  const copyLayer = (ctx: Context, image: Image, i: number): Promise<LayerPut> => {
    const key = destination.layerKey(ctx.target, image, i);
    const shared = key === undefined ? undefined : layerJobs.get(key);
    if (shared !== undefined) return shared;
    const what = `${image.ref === undefined ? image.digest : formatReference(image.ref)} layer ${i} (${image.layers[i]!.descriptor.digest})`;
    // The slot is taken only by the copy itself: a layer shared with a copy in flight waits outside the limit.
    const job = limit(() => withRetry(what, () => destination.putLayer(ctx.target, image, i, putOf(ctx)))).then((r) => {
      const { result } = ctx;
      home(r.descriptor.digest, ctx.scope);
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

  /** Every job of a phase, the first failure stopping the others. */
  const all = async <T>(jobs: Array<Promise<T>>): Promise<T[]> => {
    for (const job of jobs) job.catch((err: unknown) => controller.abort(err));
    const settled = await Promise.allSettled(jobs);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw signal.aborted && signal.reason !== undefined ? signal.reason : failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
  };

  /**
   * A job per item, a few more at once than copies may run (so that the slots stay busy while an
   * image waits for a layer another one is copying), the first failure stopping the rest. All at
   * once, a wave of a thousand images held every one's promises, closures and queued copies.
   */
  const bounded = async <T>(items: readonly T[], job: (item: T) => Promise<void>): Promise<void> => {
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < items.length) {
        signal.throwIfAborted();
        await job(items[next++]!);
      }
    };
    await all(Array.from({ length: Math.min(items.length, IN_FLIGHT_PER_SLOT * slots.concurrency) }, lane));
  };

  const finishTarget = async (ctx: Context): Promise<void> => {
    for (const [i, image] of ctx.target.images.entries()) ctx.manifests.push(await destination.putManifest(ctx.target, image, ctx.layers[i]!, putOf(ctx)));
    ctx.result.images = ctx.manifests.map((m, i) => ({ platform: ctx.target.images[i]!.platform, sourceDigest: m.sourceDigest, digest: m.digest }));
    ctx.result.index = await destination.putIndex(ctx.target, ctx.manifests, putOf(ctx));
  };

  const contexts = targets.map(contextOf);
  scopes = new Set(contexts.map((c) => c.scope)).size;
  try {
    if (destination.maxConcurrency === 1) {
      // One copy at a time, layers stacked on their parents: every config, then every layer in
      // the source's order (a one-pass stream's) but never before its parent, then the manifests.
      for (const ctx of contexts) await destination.prepare(ctx.target, putOf(ctx));
      for (const ctx of contexts) for (const image of ctx.target.images) await copyConfig(ctx, image);
      const tasks: Array<{ ctx: Context; image: Image; put: LayerPut[]; index: number; key: number; seq: number }> = [];
      for (const ctx of contexts) {
        for (const image of ctx.target.images) {
          const put: LayerPut[] = [];
          ctx.layers.push(put);
          let key = Number.NEGATIVE_INFINITY;
          for (let index = 0; index < image.layers.length; index++) {
            key = Math.max(key, options.order?.(image, index) ?? tasks.length);
            tasks.push({ ctx, image, put, index, key, seq: tasks.length });
          }
        }
      }
      tasks.sort((x, y) => x.key - y.key || x.seq - y.seq);
      for (const t of tasks) t.put[t.index] = await copyLayer(t.ctx, t.image, t.index);
      // A task per layer of every image: not held through the manifests and names.
      tasks.length = 0;
    } else {
      // Target by target (a second repository then mounts what the first received), each one's
      // blobs at once; where every target has the one scope (nothing to mount), all targets at once.
      const waves = scopes > 1 ? contexts.map((c) => [c]) : [contexts];
      for (const wave of waves) {
        for (const ctx of wave) await destination.prepare(ctx.target, putOf(ctx));
        const images = wave.flatMap((ctx) => ctx.target.images.map((_, n): [Context, number] => [ctx, n]));
        await bounded(images, async ([ctx, n]) => {
          const image = ctx.target.images[n]!;
          const [layers] = await Promise.all([Promise.all(image.layers.map((_, i) => copyLayer(ctx, image, i))), copyConfig(ctx, image)]);
          ctx.layers[n] = layers;
        });
      }
    }
    // Manifests and names last: every blob is in the destination (and a one-pass source read to
    // its end and checked) before any manifest or name points at it.
    await options.beforeNames?.();
    for (const ctx of contexts) await finishTarget(ctx);
    for (const ctx of contexts) await destination.setRef(ctx.target, ctx.manifests, ctx.result.index, putOf(ctx));
  } catch (err) {
    // The first failure stops the other copies in flight; they settle before the destination is released.
    controller.abort(err);
    await Promise.allSettled([...blobJobs.values(), ...layerJobs.values()]);
    await destination.abort();
    throw err;
  }
  // The copies' bookkeeping (per image and per blob) is done with: a destination that writes at
  // commit (a bundle, streamed for minutes) must not hold it all that time.
  const results = contexts.map((c) => c.result);
  contexts.length = 0;
  blobJobs.clear();
  layerJobs.clear();
  homes.clear();
  try {
    await destination.commit();
  } catch (err) {
    // A commit that failed halfway (the disk filling while an archive's index is written) is released like any failure.
    await destination.abort();
    throw err;
  }
  return results;
}
