import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { digestOf, type Digest } from '../oci/digest.js';
import type { Image, Layer, OpenOptions } from '../oci/image.js';
import { parseImageConfig, parseManifest } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import { formatReference } from '../oci/reference.js';
import { layerFromBlob } from '../io/layer-forms.js';
import { holdsCompressedBlob } from '../oci/image.js';
import type { PushCompression } from './push-target.js';
import { rewriteManifest } from '../oci/rewrite-manifest.js';
import { setConfigDiffIds, setManifestLayers } from '../oci/build-image.js';

/**
 * Images with some layers in another form, so that every location can serve them as a registry
 * does: compressed blobs, a manifest naming them, raw bytes kept beside the parsed form.
 */

/**
 * What compressImage needs of a cache of compressed layer forms: a layer's compressed blob, made
 * once and kept (the store's is store/compressed-cache.ts; verbs/ passes it in).
 */
export interface CompressedLayers {
  ensure(layer: Layer, compression: PushCompression, options?: OpenOptions): Promise<{ digest: Digest; size: number; open(): Readable }>;
}

function nameOf(image: Image): string {
  return image.ref ? formatReference(image.ref) : image.digest;
}

function rebuild(image: Image, rawManifest: Buffer, mediaType: string, rawConfig: Buffer, layers: readonly Layer[]): Image {
  const what = `manifest of ${nameOf(image)}`;
  const parsed = parseManifest(rawManifest, mediaType, what);
  if (parsed.kind !== 'image') throw new FerryError('INVALID_MANIFEST', `${what}: not an image manifest`);
  const config = rawConfig === image.rawConfig ? image.config : parseImageConfig(rawConfig, `config of ${nameOf(image)}`);
  return {
    ref: image.ref,
    digest: digestOf(rawManifest),
    mediaType: parsed.mediaType,
    rawManifest,
    manifest: parsed.manifest,
    configDigest: parsed.manifest.config.digest,
    rawConfig,
    config,
    platform: image.platform,
    layers,
  };
}

/**
 * The image with `replacements[i]` in place of layer i where given: a layer made anew (another
 * tar, so another diffId) changes the config's `rootfs.diff_ids` too, and so the config digest.
 * The manifest lists each replacement's descriptor; everything else in both JSONs is kept.
 */
export function replaceLayers(image: Image, replacements: ReadonlyArray<Layer | undefined>): Image {
  const name = nameOf(image);
  if (replacements.length !== image.layers.length) throw new FerryError('INVALID_MANIFEST', `${name}: ${replacements.length} replacements for ${image.layers.length} layers`);
  if (replacements.every((r) => r === undefined)) return image;
  const layers = image.layers.map((l, i) => replacements[i] ?? l);
  const what = `manifest of ${name}`;
  const rawConfig = replacements.some((r, i) => r !== undefined && r.diffId !== image.layers[i]!.diffId)
    ? setConfigDiffIds(image.rawConfig, layers.map((l) => l.diffId), `config of ${name}`)
    : image.rawConfig;
  const rawManifest = setManifestLayers(image.rawManifest, { digest: digestOf(rawConfig), size: rawConfig.length }, replacements.map((r) => r?.descriptor), what);
  return rebuild(image, rawManifest, image.mediaType, rawConfig, layers);
}

export { holdsCompressedBlob } from '../oci/image.js';

/**
 * The image with every layer it holds only as a tar compressed into `cache` (once; later calls
 * find it there): what `ferry serve` offers, and what a push from the store sends. Compression
 * is deterministic, so the new manifest digest is the same each time for the same compression.
 */
export async function compressImage(image: Image, cache: CompressedLayers, compression: PushCompression, options: OpenOptions = {}): Promise<Image> {
  const name = nameOf(image);
  const replacements: Array<Layer | undefined> = [];
  const digests: Array<{ digest: Layer['descriptor']['digest']; size: number; compression: PushCompression } | undefined> = [];
  for (const layer of image.layers) {
    if (holdsCompressedBlob(layer)) {
      replacements.push(undefined);
      digests.push(undefined);
      continue;
    }
    const c = await cache.ensure(layer, compression, options);
    const docker = image.mediaType === MediaType.dockerManifest && compression === 'gzip';
    const descriptor = { mediaType: docker ? MediaType.dockerLayerGzip : compression === 'gzip' ? MediaType.ociLayerGzip : MediaType.ociLayerZstd, digest: c.digest, size: c.size };
    replacements.push(
      layerFromBlob({ descriptor, diffId: layer.diffId, what: `${name} (compressed from the cache)`, openBlob: async () => c.open() }),
    );
    digests.push({ digest: c.digest, size: c.size, compression });
  }
  if (replacements.every((r) => r === undefined)) return image;
  const rewritten = rewriteManifest(image.rawManifest, image.mediaType, digests, `manifest of ${name}`);
  return rebuild(image, rewritten.raw, rewritten.mediaType, image.rawConfig, image.layers.map((l, i) => replacements[i] ?? l));
}
