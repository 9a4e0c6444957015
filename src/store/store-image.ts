import type { Readable } from 'node:stream';
import { FerryError, isFerryError, UsageError } from '../errors.js';
import { digestHex, shortDigest, type Digest } from '../oci/digest.js';
import type { Image, Layer, OpenOptions } from '../oci/image.js';
import { configPlatform, parseImageConfig, parseManifest } from '../oci/manifest.js';
import { formatPlatform, hostPlatform, platformMatches, type Platform } from '../oci/platform.js';
import { formatReference, parseReference, referenceName, type Reference } from '../oci/reference.js';
import { keptBytes } from '../io/kept-bytes.js';
import type { BlobLayerSource, TarLayerSource } from '../io/layer-forms.js';
import { chainIds } from './layers.js';
import type { RefEntry } from './refs.js';
import type { Store } from './store.js';

/**
 * A store image as an `Image`, so export, save, push and inspect read from the store like from
 * any other location. Layers read from the kept compressed blob, else from a kept uncompressed
 * tar (named by its diffId), else from the unpacked files and the layer's tar-split (the original
 * tar, byte for byte); a layer that exists only unpacked without a split cannot be read back
 * byte for byte and says so.
 */
export async function openStoreImageByDigest(store: Store, manifestDigest: Digest, ref?: Reference): Promise<Image> {
  const what = ref === undefined ? `store image ${manifestDigest}` : `store image ${formatReference(ref)}`;
  // Both documents are kept as long as a copy runs: packed with the other kept documents (see keptBytes).
  const rawManifest = keptBytes(await store.blobs.read(manifestDigest));
  const parsed = parseManifest(rawManifest, undefined, what);
  if (parsed.kind !== 'image') throw new FerryError('STORE_ERROR', `${what}: ${manifestDigest} is an index, not an image manifest`);
  const manifest = parsed.manifest;
  const rawConfig = keptBytes(await store.blobs.read(manifest.config.digest));
  const config = parseImageConfig(rawConfig, `${what} config`);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new FerryError('INVALID_MANIFEST', `${what}: ${manifest.layers.length} layers but ${diffIds.length} diff_ids`);
  }
  const layers: Layer[] = [];
  const chains = chainIds(diffIds);
  for (const [i, descriptor] of manifest.layers.entries()) {
    const diffId = diffIds[i]!;
    const chainId = chains[i]!;
    const layerWhat = `${what} layer ${i}`;
    if (await store.blobs.has(descriptor.digest)) {
      layers.push(blobLayer({ descriptor, diffId, what: layerWhat, openBlob: () => store.blobs.open(descriptor.digest) }));
    } else if (await store.blobs.has(diffId)) {
      const size = (await store.blobs.stat(diffId))?.size;
      const source: TarLayerSource = { descriptor, diffId, what: layerWhat, openTar: () => store.blobs.open(diffId) };
      if (size !== undefined) source.tarSize = size;
      layers.push(tarLayer(source));
    } else {
      const meta = await store.layers.meta(chainId);
      const open = meta === undefined ? undefined : await store.layers.openTar(chainId, `${layerWhat} (diffId ${diffId})`);
      if (meta !== undefined && open !== undefined) {
        layers.push(tarLayer({ descriptor, diffId, what: layerWhat, tarSize: meta.size, openTar: async () => open() }));
      } else {
        layers.push(unpackedOnlyLayer(descriptor, diffId, layerWhat));
      }
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

/**
 * io/layer-forms' layers, that module loaded when a stream is first asked for: `run` opens its
 * image but reads no layer as a stream, and layer-forms brings node:stream, zstd and digest
 * verification with it (~3 ms of a container start).
 */
function blobLayer(source: BlobLayerSource): Layer {
  return deferredLayer({ descriptor: source.descriptor, diffId: source.diffId, stored: 'blob' }, async () => (await import('../io/layer-forms.js')).layerFromBlob(source));
}

function tarLayer(source: TarLayerSource): Layer {
  const fields = { descriptor: source.descriptor, diffId: source.diffId, stored: 'tar' as const };
  return deferredLayer(source.tarSize === undefined ? fields : { ...fields, tarSize: source.tarSize }, async () => (await import('../io/layer-forms.js')).layerFromTar(source));
}

function deferredLayer(fields: Omit<Layer, 'blob' | 'tar'>, make: () => Promise<Layer>): Layer {
  let made: Promise<Layer> | undefined;
  const layer = (): Promise<Layer> => (made ??= make());
  return { ...fields, blob: async (options) => (await layer()).blob(options), tar: async (options) => (await layer()).tar(options) };
}

function unpackedOnlyLayer(descriptor: Layer['descriptor'], diffId: Digest, what: string): Layer {
  const missing = async (_options?: OpenOptions): Promise<Readable> => {
    throw new FerryError('NOT_FOUND', `${what} (${descriptor.digest}): the store holds this layer only unpacked, not as a blob or tar`, {
      hint: 'import the image from a bundle or archive with its layer blobs kept (the default) to export or push it from the store',
    });
  };
  return { descriptor, diffId, stored: 'blob', blob: missing, tar: missing };
}

/** What a user's IMAGE argument found in the store: every ref entry of that image. */
export interface StoreMatch {
  /** One per name and platform (an image ID may have several names; a name several platforms). */
  entries: RefEntry[];
  /** How it matched: by name, or as an image ID (a prefix of this kind of digest). */
  by: 'name' | 'manifest' | 'config' | 'index';
}

/** An image ID as docker takes it: a hex prefix, `sha256:` optional. */
const ID_RE = /^(?:sha256:)?([0-9a-f]{1,64})$/;

/**
 * Find what a user means by IMAGE, as docker does: a name first, normalised (`redis` is
 * docker.io/library/redis:latest; `name@sha256:...` is also the image under that name with that
 * manifest or index digest), else an image ID: a prefix of a manifest digest (as `ferry images`
 * shows), a config digest (docker's and podman's image ID) or an index digest. A prefix that fits
 * two different images is refused rather than guessed.
 */
export async function matchStoreImages(store: Store, text: string): Promise<StoreMatch> {
  const all = await store.refs.list();
  let ref: Reference | undefined;
  try {
    ref = parseReference(text);
  } catch (err) {
    if (!isFerryError(err, 'INVALID_REFERENCE')) throw err;
  }
  if (ref !== undefined) {
    const name = formatReference(ref);
    let entries = all.filter((e) => e.name === name);
    const digest = ref.digest;
    if (entries.length === 0 && digest !== undefined) {
      const repository = referenceName(ref);
      entries = all.filter((e) => (e.manifestDigest === digest || e.indexDigest === digest) && referenceName(parseReference(e.name)) === repository);
    }
    if (entries.length > 0) return { entries, by: 'name' };
  }
  const id = ID_RE.exec(text)?.[1];
  if (id !== undefined) {
    const found: Array<{ entry: RefEntry; by: StoreMatch['by']; digest: Digest; config: Digest | undefined }> = [];
    for (const entry of all) {
      const config = await configDigestOf(store, entry.manifestDigest);
      const kinds: Array<[StoreMatch['by'], Digest | undefined]> = [['manifest', entry.manifestDigest], ['config', config], ['index', entry.indexDigest]];
      const hit = kinds.find(([, d]) => d !== undefined && digestHex(d).startsWith(id));
      if (hit) found.push({ entry, by: hit[0], digest: hit[1]!, config });
    }
    if (found.length > 0) {
      // One image: one manifest, or one config (the same image under another manifest), or one index.
      const one = (values: Array<string | undefined>): boolean => values[0] !== undefined && values.every((v) => v === values[0]);
      const same = one(found.map((f) => f.entry.manifestDigest)) || one(found.map((f) => f.config)) || one(found.map((f) => f.entry.indexDigest));
      if (!same) {
        const images = [...new Set(found.map((f) => `${shortDigest(f.entry.manifestDigest)} (${f.entry.name}, ${formatPlatform(f.entry.platform)})`))];
        throw new UsageError(`image ID ${text} is ambiguous: it fits ${images.slice(0, 5).join(', ')}${images.length > 5 ? ', ...' : ''}`, {
          hint: 'give more digits of the ID, or the image name',
        });
      }
      return { entries: found.map((f) => f.entry), by: found[0]!.by };
    }
  }
  throw new FerryError('NOT_FOUND', `image ${text} is not in the store`, {
    hint: `ferry images lists what is there (name or image ID); ferry pull ${text} fetches it from a registry; ferry import loads a bundle or archive`,
  });
}

/** The config digest a stored manifest names; undefined when the manifest is missing or damaged (fsck's business). */
async function configDigestOf(store: Store, manifestDigest: Digest): Promise<Digest | undefined> {
  try {
    const parsed = parseManifest(await store.blobs.read(manifestDigest), undefined, `manifest ${manifestDigest}`);
    return parsed.kind === 'image' ? parsed.manifest.config.digest : undefined;
  } catch (err) {
    if (isFerryError(err)) return undefined;
    throw err;
  }
}

/** The ref entry a user means by `text` (a name or an image ID), for `platform` or the host's. */
export async function findStoreImage(store: Store, text: string, platform?: Platform): Promise<RefEntry> {
  const { entries } = await matchStoreImages(store, text);
  const want = platform ?? hostPlatform();
  const matching = entries.filter((e) => platformMatches(want, e.platform));
  if (matching.length > 0) return matching[0]!;
  if (platform === undefined && new Set(entries.map((e) => formatPlatform(e.platform))).size === 1) return entries[0]!;
  const have = [...new Set(entries.map((e) => formatPlatform(e.platform)))];
  throw new FerryError('PLATFORM_NOT_FOUND', `image ${text} is in the store for ${have.join(', ')}, not for ${formatPlatform(want)}`, {
    hint: 'choose one with --platform',
  });
}

/** openStoreImage(store, ref): the store image a name refers to, as an Image. */
export async function openStoreImage(store: Store, text: string, platform?: Platform): Promise<Image> {
  const entry = await findStoreImage(store, text, platform);
  return openStoreImageByDigest(store, entry.manifestDigest, parseReference(entry.name));
}
