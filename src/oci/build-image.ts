import { FerryError } from '../errors.js';
import type { Descriptor } from './descriptor.js';
import { digestOf, type Digest } from './digest.js';
import type { ContainerConfig, HistoryEntry, ImageConfig, ImageManifest } from './manifest.js';
import { MediaType } from './media-types.js';
import type { Platform } from './platform.js';

/**
 * New manifests, configs and indexes as raw bytes: the one place where an image changes
 * (commit, build, a layer in another form, an archive's synthesised manifest). Callers keep the
 * returned bytes beside the parsed form; digests come from these bytes. Key orders are part of
 * the contract: the same inputs give the same bytes, so the same digests, every time.
 */

type Json = Record<string, unknown>;

function parseObject(raw: Buffer, what: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new FerryError('INVALID_MANIFEST', `${what}: not valid JSON`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FerryError('INVALID_MANIFEST', `${what}: not a JSON object`);
  return value as Json;
}

export interface BuiltConfig {
  raw: Buffer;
  config: ImageConfig;
  digest: Digest;
}

export interface BuiltImageManifest {
  raw: Buffer;
  manifest: ImageManifest;
  digest: Digest;
}

/** What a new image sets in its base's config; `diffIds` becomes `rootfs`. */
export interface ConfigSettings {
  created?: string;
  author?: string;
  architecture?: string;
  os?: string;
  config?: ContainerConfig;
  diffIds: readonly Digest[];
  history?: readonly HistoryEntry[];
}

/**
 * The base config with these settings: fields the base has keep their place, new ones follow in
 * the order of ConfigSettings (as `{ ...base, created, config, rootfs, history }` would place them).
 */
export function imageConfig(base: Readonly<ImageConfig>, settings: ConfigSettings): BuiltConfig {
  const out: Json = { ...base };
  if (settings.created !== undefined) out.created = settings.created;
  if (settings.author !== undefined) out.author = settings.author;
  if (settings.architecture !== undefined) out.architecture = settings.architecture;
  if (settings.os !== undefined) out.os = settings.os;
  if (settings.config !== undefined) out.config = settings.config;
  out.rootfs = { type: 'layers', diff_ids: [...settings.diffIds] };
  if (settings.history !== undefined) out.history = [...settings.history];
  const config = out as ImageConfig;
  const raw = Buffer.from(JSON.stringify(config));
  return { raw, config, digest: digestOf(raw) };
}

/** The config of an image with no base (FROM scratch): the platform and no layers. */
export function scratchConfig(platform: Platform): ImageConfig {
  return {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant !== undefined ? { variant: platform.variant } : {}),
    rootfs: { type: 'layers', diff_ids: [] },
  };
}

/** The raw config with `rootfs.diff_ids` replaced (a layer made anew); everything else kept in place. */
export function setConfigDiffIds(rawConfig: Buffer, diffIds: readonly Digest[], what: string): Buffer {
  const json = parseObject(rawConfig, what);
  json.rootfs = { ...(json.rootfs as Json), diff_ids: [...diffIds] };
  return Buffer.from(JSON.stringify(json));
}

/**
 * The raw manifest pointing at a new config, with `layers[i]` replaced where `layers[i]` is given
 * (its `urls` dropped: the blob now lives where the descriptor says); everything else kept in place.
 */
export function setManifestLayers(rawManifest: Buffer, config: Pick<Descriptor, 'digest' | 'size'>, layers: ReadonlyArray<Pick<Descriptor, 'mediaType' | 'digest' | 'size'> | undefined>, what: string): Buffer {
  const manifest = parseObject(rawManifest, what);
  const out: Json = {};
  for (const [key, value] of Object.entries(manifest)) {
    if (key === 'config') out.config = { ...(value as Json), digest: config.digest, size: config.size };
    else if (key === 'layers') {
      if (!Array.isArray(value) || value.length !== layers.length) throw new FerryError('INVALID_MANIFEST', `${what}: expected ${layers.length} layers in the manifest`);
      out.layers = (value as Json[]).map((d, i) => {
        const r = layers[i];
        if (r === undefined) return d;
        const { urls: _urls, ...rest } = d;
        return { ...rest, mediaType: r.mediaType, digest: r.digest, size: r.size };
      });
    } else out[key] = value;
  }
  return Buffer.from(JSON.stringify(out));
}

/** A new image manifest (Docker schema 2 or OCI) over a config and layers, in that key order. */
export function imageManifest(mediaType: typeof MediaType.dockerManifest | typeof MediaType.ociManifest, config: Pick<Descriptor, 'digest' | 'size'>, layers: readonly Descriptor[]): BuiltImageManifest {
  const docker = mediaType === MediaType.dockerManifest;
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig, digest: config.digest, size: config.size },
    layers: [...layers],
  };
  const raw = Buffer.from(JSON.stringify(manifest));
  return { raw, manifest, digest: digestOf(raw) };
}

/**
 * The manifest of an image from a `docker save` archive that has none of its own: key order and
 * indentation as docker writes it, so the digest is the one docker would show.
 */
export function dockerSaveManifest(config: Pick<Descriptor, 'digest' | 'size'>, layers: readonly Descriptor[]): BuiltImageManifest {
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.dockerManifest,
    config: { mediaType: MediaType.dockerConfig, digest: config.digest, size: config.size },
    layers: [...layers],
  };
  const raw = Buffer.from(
    JSON.stringify(
      {
        schemaVersion: 2,
        mediaType: manifest.mediaType,
        config: { mediaType: manifest.config.mediaType, size: manifest.config.size, digest: manifest.config.digest },
        layers: manifest.layers.map((d) => ({ mediaType: d.mediaType, size: d.size, digest: d.digest })),
      },
      null,
      3,
    ),
  );
  return { raw, manifest, digest: digestOf(raw) };
}

/** An OCI layout's `index.json` over these entries (descriptors with platform and annotations). */
export function layoutIndex(entries: ReadonlyArray<Readonly<Json>>, options: { trailingNewline?: boolean } = {}): Buffer {
  const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: entries });
  return Buffer.from(options.trailingNewline === true ? `${text}\n` : text, 'utf8');
}
