import { UsageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { withLayers, type Image, type IndexInfo, type Layer } from '../oci/image.js';
import { hostPlatform, type Platform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import { parseReference, type Reference } from '../oci/reference.js';
import type { RegistryClient } from '../registry/client.js';
import { resolveRemote } from '../registry/remote-image.js';
import { chainIds, StoreDestination, type Store } from '../store/index.js';
import { copyImages, type CopyResult } from '../transfer/copy-images.js';
import { cacheImages, type CacheSummary } from '../transfer/pull-cache.js';

export interface PullOptions {
  client: RegistryClient;
  /** Platforms of an index to take (default: this host's). */
  platforms?: Platform[] | 'all';
  /** The pull cache (as export's): an interrupted pull run again fetches only what it lacked. Absent: no cache. */
  cacheDir?: string;
  /** Blobs fetched at once. Default 4. */
  jobs?: number;
  keepBlobs?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  onWarning?: (message: string) => void;
}

export interface PullResult {
  results: CopyResult[];
  /** What the pull cache gave and what was fetched, when a cache was used. */
  cache: CacheSummary | undefined;
}

/** The name an image is kept under: its tag (a digest-only reference keeps the digest). */
function nameOf(ref: Reference): Reference {
  return ref.tag === undefined ? ref : { registry: ref.registry, repository: ref.repository, tag: ref.tag };
}

/**
 * `ferry pull IMAGE...`: registry straight into the store, with export's auth, pull cache,
 * verification and progress. Layers the store already holds (with their blob, when blobs are
 * kept) are not fetched at all; the others come through the pull cache, then the transfer engine
 * copies every image into the store destination, names last.
 */
export async function pullImages(store: Store, references: readonly string[], options: PullOptions): Promise<PullResult> {
  if (references.length === 0) throw new UsageError('pull: no images given', { hint: 'ferry pull registry.internal:5000/library/redis:7' });
  const refs = references.map((text) => parseReference(text));
  const keepBlobs = options.keepBlobs ?? true;
  const call = options.signal ? { signal: options.signal } : {};
  const targets: Array<{ ref: Reference; images: Image[]; index?: IndexInfo }> = [];
  for (const ref of refs) {
    const resolved = await resolveRemote(options.client, ref, options.platforms ?? [hostPlatform()], call);
    targets.push({ ref: nameOf(ref), images: resolved.images, ...(resolved.index ? { index: resolved.index } : {}) });
  }

  // What the store lacks: a layer stack not unpacked, or a blob it keeps but does not have yet.
  const lacking = new Map<Digest, Layer>();
  for (const image of targets.flatMap((t) => t.images)) {
    const chain = chainIds(image.layers.map((l) => l.diffId));
    for (const [i, layer] of image.layers.entries()) {
      const keepsBlob = keepBlobs && layer.descriptor.digest !== layer.diffId;
      const present = (await store.layers.has(chain[i]!)) && (!keepsBlob || (await store.blobs.has(layer.descriptor.digest)));
      if (!present) lacking.set(layer.descriptor.digest, layer);
    }
  }

  let cache: CacheSummary | undefined;
  if (options.cacheDir !== undefined && lacking.size > 0) {
    // The pull cache takes the lacking layers as one image's worth; they come back reading from it.
    const carrier = withLayers(targets[0]!.images[0]!, [...lacking.values()]);
    const cached = await cacheImages([carrier], {
      dir: options.cacheDir,
      jobs: options.jobs ?? 4,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    cache = cached.summary;
    const fromCache = new Map(cached.images[0]!.layers.map((l) => [l.descriptor.digest, l]));
    for (const target of targets) target.images = target.images.map((image) => withLayers(image, image.layers.map((l) => fromCache.get(l.descriptor.digest) ?? l)));
  }

  const results = await copyImages(targets, new StoreDestination(store, { keepBlobs }), {
    ...(options.jobs === undefined ? {} : { jobs: options.jobs }),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.onWarning ? { onWarning: options.onWarning } : {}),
  });
  return { results, cache };
}
