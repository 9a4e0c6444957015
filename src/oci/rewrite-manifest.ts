import { FerryError } from '../errors.js';
import type { Descriptor } from './descriptor.js';
import { digestOf, type Digest } from './digest.js';
import type { IndexInfo } from './image.js';
import { parseManifest } from './manifest.js';
import { MediaType, layerCompression, layerMediaTypeFor } from './media-types.js';
import type { Platform } from './platform.js';

/**
 * New manifests for layers that changed form (uncompressed in a bundle or the store, compressed
 * for a registry), and the index over them. Everything else in the JSON is kept as it was, in its
 * order: annotations, the config descriptor, other fields a builder put there.
 */
export interface BuiltManifest {
  raw: Buffer;
  mediaType: string;
  digest: Digest;
}

type Json = Record<string, unknown>;

function parseObject(raw: Buffer, what: string): Json {
  const value: unknown = JSON.parse(raw.toString('utf8'));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FerryError('INVALID_MANIFEST', `${what}: not a JSON object`);
  return value as Json;
}

function built(value: Json, mediaType: string): BuiltManifest {
  const raw = Buffer.from(JSON.stringify(value));
  return { raw, mediaType, digest: digestOf(raw) };
}

/** The OCI name of a Docker layer type with the same bytes (for a manifest turned OCI). */
function ociLayerType(mediaType: string): string {
  const compression = layerCompression(mediaType);
  if (mediaType.startsWith('application/vnd.docker.image.rootfs.diff.') && compression !== undefined) return layerMediaTypeFor(compression, false);
  return mediaType;
}

/** A descriptor object with digest, size and mediaType replaced in place; `urls` dropped (the blob now lives in the registry). */
function replaceDescriptor(original: unknown, replacement: Pick<Descriptor, 'mediaType' | 'digest' | 'size'>): Json {
  const out: Json = {};
  const source = typeof original === 'object' && original !== null ? (original as Json) : {};
  for (const [key, value] of Object.entries(source)) {
    if (key === 'urls') continue;
    out[key] = key === 'mediaType' ? replacement.mediaType : key === 'digest' ? replacement.digest : key === 'size' ? replacement.size : value;
  }
  out.mediaType = replacement.mediaType;
  out.digest = replacement.digest;
  out.size = replacement.size;
  return out;
}

/**
 * The manifest with `layers[i]` replaced where `replacements[i]` is given ('none': the uncompressed
 * tar, named by its diffId, as docker-archives and raw bundles hold it). A Docker manifest stays
 * a Docker manifest for gzip; with any zstd layer it becomes an OCI manifest (Docker schema 2 has
 * no zstd type), config and layer types renamed to their OCI equivalents (same bytes).
 */
export function rewriteManifest(rawManifest: Buffer, mediaType: string, replacements: ReadonlyArray<Pick<Descriptor, 'digest' | 'size'> & { compression: 'none' | 'gzip' | 'zstd' } | undefined>, what: string): BuiltManifest {
  const json = parseObject(rawManifest, what);
  const layers = json.layers;
  if (!Array.isArray(layers) || layers.length !== replacements.length) {
    throw new FerryError('INVALID_MANIFEST', `${what}: expected ${replacements.length} layers in the manifest`);
  }
  const docker = mediaType === MediaType.dockerManifest;
  const toOci = docker && replacements.some((r) => r?.compression === 'zstd');
  const newLayers = layers.map((layer: unknown, i) => {
    const r = replacements[i];
    const current = layer as Json;
    if (r === undefined) {
      if (!toOci) return layer;
      return replaceDescriptor(layer, { mediaType: ociLayerType(String(current.mediaType)), digest: current.digest as Digest, size: current.size as number });
    }
    return replaceDescriptor(layer, { mediaType: layerMediaTypeFor(r.compression, docker && !toOci), digest: r.digest, size: r.size });
  });
  const out: Json = {};
  for (const [key, value] of Object.entries(json)) {
    if (key === 'layers') out.layers = newLayers;
    else if (key === 'mediaType' && toOci) out.mediaType = MediaType.ociManifest;
    else if (key === 'config' && toOci) out.config = { ...(value as Json), mediaType: MediaType.ociConfig };
    else out[key] = value;
  }
  return built(out, toOci ? MediaType.ociManifest : mediaType);
}

/** One image of an index as pushed: what it was in the source, and what went up. */
export interface IndexChild {
  sourceDigest: Digest;
  digest: Digest;
  size: number;
  mediaType: string;
  platform: Platform;
}

function platformJson(p: Platform): Json {
  const out: Json = { architecture: p.architecture, os: p.os };
  if (p['os.version'] !== undefined) out['os.version'] = p['os.version'];
  if (p.variant !== undefined) out.variant = p.variant;
  return out;
}

/**
 * Does the index list only these manifests (every platform it names is carried)? Then it can go
 * up as is, even over a single image; a partial one is rewritten, and a single image of a partial
 * index is pushed as itself (as docker pushes one platform).
 */
export function indexIsComplete(index: IndexInfo, manifestDigests: readonly string[], what: string): boolean {
  const parsed = parseManifest(index.raw, index.mediaType, what);
  if (parsed.kind !== 'index') throw new FerryError('INVALID_MANIFEST', `${what}: ${index.digest} is not an index`);
  return parsed.manifest.manifests.every((e) => manifestDigests.includes(e.digest));
}

/**
 * The index to push for several platforms of one name. The source index is pushed byte for byte
 * when every image in it went up unchanged; else it is rewritten (changed entries replaced,
 * entries not carried dropped, attestations with them); without a source index a new one is made
 * (a Docker manifest list when every image is a Docker manifest, else an OCI index).
 */
export function buildIndex(children: readonly IndexChild[], source: IndexInfo | undefined, what: string): BuiltManifest {
  if (source !== undefined) {
    const parsed = parseManifest(source.raw, source.mediaType, what);
    if (parsed.kind !== 'index') throw new FerryError('INVALID_MANIFEST', `${what}: ${source.digest} is not an index`);
    const bySource = new Map(children.map((c) => [c.sourceDigest as string, c]));
    const entries = parsed.manifest.manifests;
    const unchanged = entries.every((e) => bySource.get(e.digest)?.digest === e.digest) && children.every((c) => c.digest === c.sourceDigest && entries.some((e) => e.digest === c.digest));
    if (unchanged) return { raw: source.raw, mediaType: source.mediaType, digest: source.digest };
    const json = parseObject(source.raw, what);
    const anyOci = children.some((c) => c.mediaType === MediaType.ociManifest);
    const toOci = source.mediaType === MediaType.dockerManifestList && anyOci;
    const rawEntries = Array.isArray(json.manifests) ? (json.manifests as unknown[]) : [];
    const kept: Json[] = [];
    for (const entry of rawEntries) {
      const e = entry as Json;
      const child = bySource.get(String(e.digest));
      if (child === undefined) continue;
      kept.push(replaceDescriptor(e, { mediaType: child.mediaType, digest: child.digest, size: child.size }));
    }
    for (const child of children) {
      if (!rawEntries.some((e) => (e as Json).digest === child.sourceDigest)) {
        kept.push({ mediaType: child.mediaType, digest: child.digest, size: child.size, platform: platformJson(child.platform) });
      }
    }
    const out: Json = {};
    for (const [key, value] of Object.entries(json)) {
      if (key === 'manifests') out.manifests = kept;
      else if (key === 'mediaType' && toOci) out.mediaType = MediaType.ociIndex;
      else out[key] = value;
    }
    return built(out, toOci ? MediaType.ociIndex : source.mediaType);
  }
  const docker = children.every((c) => c.mediaType === MediaType.dockerManifest);
  const mediaType = docker ? MediaType.dockerManifestList : MediaType.ociIndex;
  return built(
    {
      schemaVersion: 2,
      mediaType,
      manifests: children.map((c) => ({ mediaType: c.mediaType, digest: c.digest, size: c.size, platform: platformJson(c.platform) })),
    },
    mediaType,
  );
}
