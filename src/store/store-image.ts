import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Image, Layer, OpenOptions } from '../oci/image.js';
import { configPlatform, parseImageConfig, parseManifest } from '../oci/manifest.js';
import { hostPlatform, type Platform } from '../oci/platform.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import { layerFromBlob, layerFromTar } from '../io/layer-forms.js';
import { refName, type RefEntry } from './refs.js';
import type { Store } from './store.js';

/**
 * A store image as an `Image`, so export, save, push and inspect read from the store like from
 * any other location. Layers read from the kept compressed blob, else from a kept uncompressed
 * tar (named by its diffId); a layer that exists only unpacked cannot be read back byte for byte
 * and says so.
 */
export async function openStoreImageByDigest(store: Store, manifestDigest: Digest, ref?: Reference): Promise<Image> {
  const what = ref === undefined ? `store image ${manifestDigest}` : `store image ${formatReference(ref)}`;
  const rawManifest = await store.blobs.read(manifestDigest);
  const parsed = parseManifest(rawManifest, undefined, what);
  if (parsed.kind !== 'image') throw new FerryError('STORE_ERROR', `${what}: ${manifestDigest} is an index, not an image manifest`);
  const manifest = parsed.manifest;
  const rawConfig = await store.blobs.read(manifest.config.digest);
  const config = parseImageConfig(rawConfig, `${what} config`);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new FerryError('INVALID_MANIFEST', `${what}: ${manifest.layers.length} layers but ${diffIds.length} diff_ids`);
  }
  const layers: Layer[] = [];
  for (const [i, descriptor] of manifest.layers.entries()) {
    const diffId = diffIds[i]!;
    const layerWhat = `${what} layer ${i}`;
    if (await store.blobs.has(descriptor.digest)) {
      layers.push(layerFromBlob({ descriptor, diffId, what: layerWhat, openBlob: () => store.blobs.open(descriptor.digest) }));
    } else if (await store.blobs.has(diffId)) {
      const size = (await store.blobs.stat(diffId))?.size;
      const source: Parameters<typeof layerFromTar>[0] = { descriptor, diffId, what: layerWhat, openTar: () => store.blobs.open(diffId) };
      if (size !== undefined) source.tarSize = size;
      layers.push(layerFromTar(source));
    } else {
      layers.push(unpackedOnlyLayer(descriptor, diffId, layerWhat));
    }
  }
  return {
    ref,
    digest: manifestDigest,
    mediaType: parsed.mediaType,
    rawManifest,
    manifest,
    configDigest: manifest.config.digest,
    rawConfig,
    config,
    platform: configPlatform(config),
    layers,
  };
}

function unpackedOnlyLayer(descriptor: Layer['descriptor'], diffId: Digest, what: string): Layer {
  const missing = async (_options?: OpenOptions): Promise<Readable> => {
    throw new FerryError('NOT_FOUND', `${what} (${descriptor.digest}): the store holds this layer only unpacked, not as a blob or tar`, {
      hint: 'import the image from a bundle or archive with its layer blobs kept (the default) to export or push it from the store',
    });
  };
  return { descriptor, diffId, stored: 'blob', blob: missing, tar: missing };
}

/** The ref entry a user means by `text` (a name, or a manifest digest), for `platform` or the host's. */
export async function findStoreImage(store: Store, text: string, platform?: Platform): Promise<RefEntry> {
  const name = refName(text);
  const entries = await store.refs.find(name);
  if (entries.length === 0) {
    throw new FerryError('NOT_FOUND', `image ${text} is not in the store`, { hint: 'ferry images lists what is there; ferry import loads images' });
  }
  const want = platform ?? hostPlatform();
  const matching = await store.refs.find(name, want);
  if (matching.length > 0) return matching[0]!;
  if (platform === undefined && entries.length === 1) return entries[0]!;
  throw new FerryError('PLATFORM_NOT_FOUND', `image ${text} is in the store for ${entries.map((e) => `${e.platform.os}/${e.platform.architecture}`).join(', ')}, not for ${want.os}/${want.architecture}`);
}

/** openStoreImage(store, ref): the store image a name refers to, as an Image. */
export async function openStoreImage(store: Store, text: string, platform?: Platform): Promise<Image> {
  const entry = await findStoreImage(store, text, platform);
  return openStoreImageByDigest(store, entry.manifestDigest, parseReference(entry.name));
}
