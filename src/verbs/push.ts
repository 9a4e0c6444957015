import { FerryError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Image, IndexInfo, Resolved } from '../oci/image.js';
import { parseManifest } from '../oci/manifest.js';
import { formatPlatform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import type { PushCompression } from '../io/layer-compress.js';
import type { CallOptions, PushBlobResult, RegistryClient } from '../registry/client.js';
import { RegistryDestination, type CompressedForms } from '../registry/registry-destination.js';
import { formatReference, type Reference } from '../oci/reference.js';
import type { CopyTarget } from '../oci/destination.js';
import { copyImages, type CopyResult } from '../transfer/copy-images.js';
import type { PushResult } from '../transfer/push-target.js';

export type { PushedImage, PushResult } from '../transfer/push-target.js';

/**
 * `ferry push` of `Image`s (from the store, an archive, a layout: any location) to a registry:
 * the transfer engine copies them into the registry destination. Blobs a repository has are
 * skipped, blobs another repository of the same push holds are mounted, layers held only as tars
 * go compressed (new manifest digests, both named in the result); several platforms of one name
 * go up as an index.
 */
export interface PushRequest {
  /** Repository and tag (or digest only) to push to. */
  target: Reference;
  /** One image, or one per platform. */
  images: readonly Image[];
  /** The index the images came from, pushed byte for byte when nothing in it changed. */
  index?: IndexInfo;
  /** Images already made anew from the source's (see readableStoreImage): their digest -> the source's. */
  sourceDigests?: ReadonlyMap<string, Digest>;
}

export interface PushImagesOptions {
  compression?: PushCompression;
  /** Compressed forms of tar-only layers, made once and reused (the store's cache). */
  cache?: CompressedForms;
  /** Blobs in flight at once (default 4). */
  jobs?: number;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
}

/** Push every request (in order, their blobs concurrently); shared blobs go up once and are mounted elsewhere. */
export async function pushImages(client: RegistryClient, requests: readonly PushRequest[], options: PushImagesOptions = {}): Promise<PushResult[]> {
  const destination = new RegistryDestination(client, {
    ...(options.compression ? { compression: options.compression } : {}),
    ...(options.cache ? { forms: options.cache } : {}),
  });
  const targets = requests.map((r) => ({
    ref: r.target,
    images: r.images,
    ...(r.index ? { index: r.index } : {}),
    ...(r.sourceDigests ? { originalDigests: r.sourceDigests } : {}),
  }));
  const copied = await copyImages(targets, destination, {
    ...(options.jobs === undefined ? {} : { jobs: options.jobs }),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  return pushResults(targets, copied);
}

/** What each target's copy into a registry gave, as push reports it. */
export function pushResults(targets: readonly CopyTarget[], copied: readonly CopyResult[]): PushResult[] {
  return copied.map((c, i) => {
    const request = targets[i]!;
    const images = c.images.map((m) => ({ platform: m.platform, sourceDigest: m.sourceDigest, digest: m.digest, rewritten: m.digest !== m.sourceDigest }));
    const result: PushResult = {
      target: c.ref!,
      digest: c.index ?? images[0]!.digest,
      images,
      uploaded: c.blobsWritten + c.layersWritten,
      present: c.blobsPresent + c.layersPresent,
      mounted: c.blobsMounted,
    };
    if (c.index !== undefined) result.index = { sourceDigest: request.index?.digest, digest: c.index, rewritten: c.index !== request.index?.digest };
    return result;
  });
}

export interface PushOptions extends CallOptions {
  /** Repositories of the target registry to mount blobs from. */
  mountFrom?: readonly string[];
  chunkSize?: number;
  /** Told about each blob as it is settled. */
  onBlob?: (digest: Digest, result: PushBlobResult) => void;
}

function destinationFor(client: RegistryClient, options: PushOptions): RegistryDestination {
  return new RegistryDestination(client, {
    ...(options.mountFrom ? { mountFrom: options.mountFrom } : {}),
    ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
    ...(options.onBlob ? { onBlob: options.onBlob } : {}),
  });
}

/**
 * Push one image: layers (present ones skipped, mounted where possible), the config, then the
 * manifest under `target` (its tag, or its digest). Returns the manifest digest. The transfer
 * engine does the copy (RegistryDestination); this only names it.
 */
export async function pushImage(client: RegistryClient, target: Reference, image: Image, options: PushOptions = {}): Promise<Digest> {
  const [copied] = await copyImages([{ ref: target, images: [image] }], destinationFor(client, options), options.signal ? { signal: options.signal } : {});
  return copied!.images[0]!.digest;
}

/**
 * Push what `resolveRemote` (or any location) resolved: every image by digest, then the index
 * byte for byte under the tag. An index is pushed only when all its images are carried: that is
 * checked before any byte goes out.
 */
export async function pushResolved(client: RegistryClient, target: Reference, resolved: Resolved, options: PushOptions = {}): Promise<Digest> {
  if (resolved.images.length === 1 && resolved.index === undefined) return pushImage(client, target, resolved.images[0]!, options);
  const index = resolved.index;
  if (index === undefined) {
    throw new FerryError('USAGE', `push ${formatReference(target)}: ${resolved.images.length} images but no index to name them by`);
  }
  const parsed = parseManifest(index.raw, index.mediaType, `index ${index.digest}`);
  if (parsed.kind !== 'index') throw new FerryError('INVALID_MANIFEST', `index ${index.digest}: not an index`);
  const carried = new Set(resolved.images.map((i) => i.digest));
  const missing = parsed.manifest.manifests.filter((d) => !carried.has(d.digest));
  if (missing.length > 0) {
    const named = missing.map((d) => `${d.platform === undefined ? 'unknown' : formatPlatform(d.platform)} ${d.digest}`).join(', ');
    throw new FerryError('UNSUPPORTED', `push ${formatReference(target)}: the index ${index.digest} also names ${named}, which are not carried`, {
      hint: 'push with every platform, or push one platform by its own tag',
    });
  }
  const [copied] = await copyImages([{ ref: target, images: resolved.images, index }], destinationFor(client, options), options.signal ? { signal: options.signal } : {});
  return copied!.index!;
}
