import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { keptBytes } from '../io/kept-bytes.js';
import { layerFromBlob } from '../io/layer-forms.js';
import type { Descriptor } from '../oci/descriptor.js';
import type { Image, IndexInfo, Layer, OpenOptions, Resolved } from '../oci/image.js';
import {
  checkLayers,
  configPlatform,
  parseImageConfig,
  parseManifest,
  type ImageIndexManifest,
  type ImageManifest,
} from '../oci/manifest.js';
import { formatPlatform, hostPlatform, normalizePlatform, platformMatches, type Platform } from '../oci/platform.js';
import { formatReference, withDigest, type Reference } from '../oci/reference.js';
import type { CallOptions, ManifestResponse, RegistryClient } from './client.js';

/**
 * The registry as a location to read: `resolveRemote(client, ref)` reads a reference as `Image`s
 * (one per requested platform of an index). Writing is RegistryDestination's, through the
 * transfer engine (verbs/push.ts).
 */

/** Index entries that are not runnable images (buildx attestations: platform unknown/unknown). */
function isImageEntry(d: Descriptor): boolean {
  if (d.annotations?.['vnd.docker.reference.type'] !== undefined) return false;
  return d.platform === undefined || d.platform.os !== 'unknown';
}

function entryPlatformText(d: Descriptor): string {
  return d.platform === undefined ? 'unknown' : formatPlatform(d.platform);
}

/** The index entries to take for each requested platform: the first that matches, exact variant preferred. */
export function selectPlatforms(index: ImageIndexManifest, platforms: Platform[] | 'all', what: string): Descriptor[] {
  const entries = index.manifests.filter(isImageEntry);
  if (platforms === 'all') {
    if (entries.length === 0) throw new FerryError('PLATFORM_NOT_FOUND', `${what}: the index lists no images`);
    return entries;
  }
  const out: Descriptor[] = [];
  for (const want of platforms) {
    const candidates = entries.filter((d) => d.platform !== undefined && platformMatches(want, d.platform));
    const n = normalizePlatform(want);
    const exact = candidates.find((d) => normalizePlatform(d.platform!).variant === n.variant);
    const chosen = exact ?? candidates[0];
    if (chosen === undefined) {
      const available = [...new Set(entries.map(entryPlatformText))].join(', ');
      throw new FerryError('PLATFORM_NOT_FOUND', `${what}: no image for platform ${formatPlatform(want)} (available: ${available || 'none'})`, {
        hint: `choose one of the available platforms with --platform`,
      });
    }
    if (!out.includes(chosen)) out.push(chosen);
  }
  return out;
}

export interface ResolveOptions extends CallOptions {
  /** The index entry this manifest was chosen by (its platform fills in a variant the config lacks). */
  entry?: Descriptor;
}

/** Build the `Image` of an image manifest already fetched: fetch and parse its config, wire its layers. */
export async function remoteImage(client: RegistryClient, ref: Reference, fetched: ManifestResponse, options: ResolveOptions = {}): Promise<Image> {
  const name = formatReference(withDigest(ref, fetched.digest));
  const parsed = parseManifest(fetched.raw, fetched.mediaType, `manifest of ${name}`);
  if (parsed.kind !== 'image') throw new FerryError('INVALID_MANIFEST', `${name}: expected an image manifest, got an index (${parsed.mediaType})`);
  const manifest: ImageManifest = parsed.manifest;
  checkLayers(manifest, name);
  const call: CallOptions = options.signal ? { signal: options.signal } : {};
  // Both documents are kept as long as the copy runs: packed with the other kept documents (see keptBytes).
  const rawConfig = keptBytes(await client.getBlobBytes(ref, manifest.config, call));
  const config = parseImageConfig(rawConfig, `config ${manifest.config.digest} of ${name}`);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new FerryError('INVALID_MANIFEST', `${name}: the manifest lists ${manifest.layers.length} layers but the config ${diffIds.length} diff_ids`);
  }
  const layers: Layer[] = manifest.layers.map((descriptor, i) =>
    layerFromBlob({
      descriptor,
      diffId: diffIds[i]!,
      what: name,
      // layerFromBlob verifies the digest: the client need not hash the same bytes twice.
      openBlob: (o?: OpenOptions): Promise<Readable> => client.openBlob(ref, descriptor, { verify: false, ...(o?.signal ? { signal: o.signal } : {}) }),
    }),
  );
  const platform = configPlatform(config);
  const entryVariant = options.entry?.platform?.variant;
  if (platform.variant === undefined && entryVariant !== undefined && options.entry?.platform?.architecture === platform.architecture) {
    platform.variant = entryVariant;
  }
  return {
    ref: withDigest(ref, fetched.digest),
    digest: fetched.digest,
    mediaType: parsed.mediaType,
    rawManifest: keptBytes(fetched.raw),
    manifest,
    configDigest: manifest.config.digest,
    rawConfig,
    config,
    platform,
    layers,
  };
}

/**
 * Resolve a reference to images. An index gives one image per requested platform (default:
 * the host's), or every image with 'all'; PLATFORM_NOT_FOUND lists what it has. A single
 * manifest is taken as is when no platform was asked for, else it must match one.
 */
export async function resolveRemote(
  client: RegistryClient,
  ref: Reference,
  platforms?: Platform[] | 'all',
  options: CallOptions = {},
): Promise<Resolved> {
  const top = await client.getManifest(ref, options);
  const name = formatReference(ref);
  const parsed = parseManifest(top.raw, top.mediaType, `manifest of ${name}`);
  if (parsed.kind === 'image') {
    const image = await remoteImage(client, ref, top, options);
    if (platforms !== undefined && platforms !== 'all' && !platforms.some((p) => platformMatches(p, image.platform))) {
      throw new FerryError(
        'PLATFORM_NOT_FOUND',
        `${name}: no image for platform ${platforms.map(formatPlatform).join(', ')} (the image is ${formatPlatform(image.platform)} only)`,
        { hint: `use --platform ${formatPlatform(image.platform)}` },
      );
    }
    return { images: [image] };
  }
  const index: IndexInfo = { digest: top.digest, mediaType: parsed.mediaType, raw: top.raw };
  const chosen = selectPlatforms(parsed.manifest, platforms ?? [hostPlatform()], name);
  const images = await Promise.all(
    chosen.map(async (entry) => {
      const childRef = withDigest(ref, entry.digest);
      const child = await client.getManifest(childRef, options);
      return remoteImage(client, ref, child, { ...options, entry });
    }),
  );
  return { images, index };
}
