import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { digestHex, type Digest } from '../oci/digest.js';
import type { Image, IndexInfo, Layer } from '../oci/image.js';
import { parseManifest } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import { platformMatches, type Platform } from '../oci/platform.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import { layerFromTar } from '../io/layer-forms.js';
import { upperLayerTar } from '../runtime/layer-tar.js';
import { chainIds, openStoreImageByDigest, refName, type RefEntry, type Store } from '../store/index.js';
import { COMPRESSED_CACHE_DIR, CompressedLayerCache } from '../store/compressed-cache.js';
import { replaceLayers } from '../transfer/compressed-image.js';

/**
 * Store images grouped by name, as push, serve and save read them: one `Image` per platform a
 * name has, and the index they were imported from when the store kept it.
 */
export interface StoreName {
  ref: Reference;
  images: Image[];
  index?: IndexInfo;
  /** Images that had to be written anew (see readableStoreImage): new manifest digest -> the store's. */
  sourceDigests: Map<string, Digest>;
}

/** Where compressed forms of the store's uncompressed layers are kept (made by push and serve). */
export function storeLayerCache(store: Store): CompressedLayerCache {
  return new CompressedLayerCache(join(store.root, COMPRESSED_CACHE_DIR));
}

/** Bump when the tar written from unpacked layers changes, so remembered measurements are not trusted. */
const REGENERATED_TAR_VERSION = 'v1';

/**
 * The store image as an `Image` whose every layer can be read. A layer the store holds only
 * unpacked without a tar-split (a path written twice in its tar; a store from before tar-split)
 * is written anew as a tar from its files; that tar is not byte for byte the original, so its diffId differs, and the image gets a
 * new config (rootfs.diff_ids) and manifest. The tar's diffId is measured once and remembered
 * in the layer cache, so serve, push and save agree on the same new digests every time.
 */
export async function readableStoreImage(store: Store, manifestDigest: Digest, ref: Reference, cache: CompressedLayerCache): Promise<Image> {
  const image = await openStoreImageByDigest(store, manifestDigest, ref);
  const chains = chainIds(image.layers.map((l) => l.diffId));
  const replacements: Array<Layer | undefined> = [];
  for (const [i, layer] of image.layers.entries()) {
    // Kept as a blob or a tar, or reproducible from its tar-split: the original diffId stays.
    if (layer.stored === 'tar' || (await store.blobs.has(layer.descriptor.digest))) {
      replacements.push(undefined);
      continue;
    }
    const chainId = chains[i]!;
    if ((await store.layers.meta(chainId)) === undefined) {
      throw new FerryError('NOT_FOUND', `${formatReference(ref)}: layer ${i} (${layer.descriptor.digest}) is neither a blob nor unpacked in the store`, { hint: 'ferry fsck checks the store; import the image again' });
    }
    const diff = store.layers.diffDir(chainId);
    const openTar = async (): Promise<Readable> => Readable.from(upperLayerTar(diff));
    const measured = await cache.measureTar(`chain-${REGENERATED_TAR_VERSION}-${digestHex(chainId)}`, openTar);
    const docker = image.mediaType === MediaType.dockerManifest;
    replacements.push(
      layerFromTar({
        descriptor: { mediaType: docker ? MediaType.dockerLayer : MediaType.ociLayer, digest: measured.diffId, size: measured.tarSize },
        diffId: measured.diffId,
        tarSize: measured.tarSize,
        what: `${formatReference(ref)} layer ${i} (written anew from its unpacked files)`,
        openTar,
      }),
    );
  }
  return replaceLayers(image, replacements);
}

async function openEntries(store: Store, name: string, entries: RefEntry[]): Promise<StoreName> {
  const ref = parseReference(name);
  const cache = storeLayerCache(store);
  const images: Image[] = [];
  const sourceDigests = new Map<string, Digest>();
  for (const entry of entries) {
    const image = await readableStoreImage(store, entry.manifestDigest, ref, cache);
    if (image.digest !== entry.manifestDigest) sourceDigests.set(image.digest, entry.manifestDigest);
    images.push(image);
  }
  const out: StoreName = { ref, images, sourceDigests };
  const indexDigest = entries[0]?.indexDigest;
  if (indexDigest !== undefined && entries.every((e) => e.indexDigest === indexDigest) && (await store.blobs.has(indexDigest))) {
    const raw = await store.blobs.read(indexDigest);
    const parsed = parseManifest(raw, undefined, `index ${indexDigest} of ${name}`);
    if (parsed.kind === 'index') out.index = { digest: indexDigest, mediaType: parsed.mediaType, raw };
  }
  return out;
}

/** Every name in the store, each with all its platforms. */
export async function openAllStoreNames(store: Store): Promise<StoreName[]> {
  const byName = new Map<string, RefEntry[]>();
  for (const entry of await store.refs.list()) {
    const list = byName.get(entry.name) ?? [];
    list.push(entry);
    byName.set(entry.name, list);
  }
  const out: StoreName[] = [];
  for (const [name, entries] of byName) out.push(await openEntries(store, name, entries));
  return out;
}

/** One name (as the user typed it), every platform it has or those asked for. */
export async function openStoreName(store: Store, text: string, platforms?: Platform[]): Promise<StoreName> {
  const name = refName(text);
  let entries = await store.refs.find(name);
  if (entries.length === 0) {
    throw new FerryError('NOT_FOUND', `image ${text} is not in the store`, { hint: 'ferry images lists what is there; ferry import loads images' });
  }
  if (platforms !== undefined) {
    entries = entries.filter((e) => platforms.some((p) => platformMatches(p, e.platform)));
    if (entries.length === 0) throw new FerryError('PLATFORM_NOT_FOUND', `image ${text} is not in the store for the platforms asked for`);
  }
  const opened = await openEntries(store, name, entries);
  // A subset of an index's platforms is pushed under a new index: the old one names the others.
  return opened;
}
