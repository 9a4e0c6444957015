import { FerryError } from '../errors.js';
import { parseDescriptor, type Descriptor } from './descriptor.js';
import { isDigest, type Digest } from './digest.js';
import { parseSharedJson, type Sharing } from './shared-json.js';
import {
  MediaType,
  isForeignLayer,
  isImageManifestMediaType,
  isIndexMediaType,
  isSchema1MediaType,
  layerCompression,
} from './media-types.js';
import type { Platform } from './platform.js';

/** Manifests and configs are buffered: refuse anything larger than this. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

export interface ImageIndexManifest {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  [key: string]: unknown;
}

/** The OCI/Docker image config; unknown fields are kept because raw bytes are kept. */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  created?: string;
  author?: string;
  config?: ContainerConfig;
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: HistoryEntry[];
  [key: string]: unknown;
}

export type ParsedManifest =
  | { kind: 'image'; mediaType: string; manifest: ImageManifest }
  | { kind: 'index'; mediaType: string; manifest: ImageIndexManifest };

function parseJson(bytes: Uint8Array, what: string, sharing: Sharing): Record<string, unknown> {
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new FerryError('INVALID_MANIFEST', `${what}: ${bytes.length} bytes is over the ${MAX_MANIFEST_BYTES}-byte limit`);
  }
  let value: unknown;
  try {
    value = parseSharedJson(Buffer.from(bytes).toString('utf8'), sharing);
  } catch (err) {
    throw new FerryError('INVALID_MANIFEST', `${what}: not valid JSON`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FerryError('INVALID_MANIFEST', `${what}: not a JSON object`);
  }
  return value as Record<string, unknown>;
}

function schema1Error(what: string): FerryError {
  return new FerryError('UNSUPPORTED', `${what}: Docker schema 1 manifests are not supported`, {
    hint: 'schema 1 was retired in 2019; push the image again with a current docker or skopeo to get a schema 2 / OCI manifest',
  });
}

/**
 * Parse a manifest or index from its raw bytes. `mediaType` is what the server or the referring
 * descriptor said (Content-Type); the document's own mediaType field decides when present.
 */
export function parseManifest(bytes: Uint8Array, mediaType: string | undefined, what: string, sharing: Sharing = 'process'): ParsedManifest {
  const v = parseJson(bytes, what, sharing);
  const declared = typeof v.mediaType === 'string' ? v.mediaType : undefined;
  const headerType = mediaType?.split(';')[0]?.trim();
  if (v.schemaVersion === 1 || (headerType && isSchema1MediaType(headerType)) || (declared && isSchema1MediaType(declared))) {
    throw schema1Error(what);
  }
  if (v.schemaVersion !== 2) {
    throw new FerryError('INVALID_MANIFEST', `${what}: unsupported schemaVersion ${String(v.schemaVersion)}`);
  }
  let type = declared ?? headerType;
  if (type === undefined || type === '' || type === 'application/json' || type === 'application/octet-stream') {
    // OCI allows the mediaType field to be absent: tell them apart by shape.
    type = Array.isArray(v.manifests) ? MediaType.ociIndex : MediaType.ociManifest;
  }
  if (isIndexMediaType(type)) {
    if (!Array.isArray(v.manifests)) throw new FerryError('INVALID_MANIFEST', `${what}: index has no manifests list`);
    const manifests = v.manifests.map((d, i) => parseDescriptor(d, `${what} manifests[${i}]`));
    const manifest: ImageIndexManifest = { schemaVersion: 2, mediaType: type, manifests };
    if (isStringRecord(v.annotations)) manifest.annotations = v.annotations;
    return { kind: 'index', mediaType: type, manifest };
  }
  if (!isImageManifestMediaType(type)) {
    throw new FerryError('UNSUPPORTED', `${what}: unsupported manifest media type "${type}"`, {
      hint: 'ferry handles OCI and Docker schema 2 images; artifacts such as Helm charts or signatures are not images',
    });
  }
  if (!Array.isArray(v.layers)) throw new FerryError('INVALID_MANIFEST', `${what}: manifest has no layers list`);
  const config = parseDescriptor(v.config, `${what} config`);
  const layers = v.layers.map((d, i) => parseDescriptor(d, `${what} layers[${i}]`));
  const manifest: ImageManifest = { schemaVersion: 2, mediaType: type, config, layers };
  if (isStringRecord(v.annotations)) manifest.annotations = v.annotations;
  if (v.subject !== undefined) manifest.subject = parseDescriptor(v.subject, `${what} subject`);
  return { kind: 'image', mediaType: type, manifest };
}

/** Check that every layer of an image manifest is one ferry can carry. */
export function checkLayers(manifest: ImageManifest, what: string): void {
  manifest.layers.forEach((layer, i) => {
    if (isForeignLayer(layer.mediaType)) {
      throw new FerryError('UNSUPPORTED', `${what}: layer ${i} (${layer.digest}) is a foreign/non-distributable layer (${layer.mediaType})`, {
        hint: 'foreign layers (e.g. Windows base layers) must be fetched from their URLs; ferry carries only distributable layers',
      });
    }
    if (layerCompression(layer.mediaType) === undefined) {
      throw new FerryError('UNSUPPORTED', `${what}: layer ${i} (${layer.digest}) has unsupported media type "${layer.mediaType}"`);
    }
  });
}

export function parseImageConfig(bytes: Uint8Array, what: string, sharing: Sharing = 'process'): ImageConfig {
  const v = parseJson(bytes, what, sharing);
  if (typeof v.architecture !== 'string' || typeof v.os !== 'string') {
    throw new FerryError('INVALID_MANIFEST', `${what}: config lacks os/architecture`);
  }
  const rootfs = v.rootfs as Record<string, unknown> | undefined;
  if (!rootfs || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) {
    throw new FerryError('INVALID_MANIFEST', `${what}: config lacks rootfs.diff_ids`);
  }
  for (const d of rootfs.diff_ids) {
    if (typeof d !== 'string' || !isDigest(d)) {
      throw new FerryError('INVALID_MANIFEST', `${what}: bad diff_id "${String(d)}"`);
    }
  }
  if (v.config !== undefined && v.config !== null && typeof v.config !== 'object') {
    throw new FerryError('INVALID_MANIFEST', `${what}: "config" is not an object`);
  }
  return v as unknown as ImageConfig;
}

/** The platform an image config declares. */
export function configPlatform(config: ImageConfig): Platform {
  const p: Platform = { os: config.os, architecture: config.architecture };
  if (config.variant) p.variant = config.variant;
  if (config['os.version']) p['os.version'] = config['os.version'];
  return p;
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}
