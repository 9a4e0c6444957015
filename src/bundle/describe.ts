import type { Digest } from '../oci/digest.js';
import { formatPlatform } from '../oci/platform.js';
import { PLAIN_ZSTD_MAX_WINDOW_LOG, type BundleRequirement } from './format.js';
import type { BundleHeaderInfo } from './read-bundle.js';

/** What `ferry ls` shows, computed from the header alone (no blob is read). */
export interface BundleDescription {
  bundle: string;
  /** Where it was read from: one file, volumes, or stdin. */
  source: 'file' | 'volumes' | 'stdin';
  formatVersion: number;
  ferryVersion: string;
  created: string;
  layers: 'raw' | 'as-pulled';
  signed: boolean;
  images: Array<{ ref: string; platform: string; manifestDigest: Digest; configDigest: Digest; layers: number; size: number }>;
  /** Layers stored once and used by more than one image. */
  sharedLayers: Array<{ blob: Digest; size: number; images: string[] }>;
  totals: {
    images: number;
    blobs: number;
    /** The uncompressed content of the blobs in the bundle. */
    uncompressedBytes: number;
    /** The bundle on disk (all volumes); undefined when read from stdin. */
    compressedBytes: number | undefined;
    /** What the same images weigh pulled from a registry. */
    pulledBytes: number;
  };
  volumes: Array<{ path: string; size: number }>;
  requires: BundleRequirement[];
  requiredBytes: number;
  window: {
    windowLog: number;
    level: number;
    /** Bytes of memory the decoder needs for the window. */
    decodeMemory: number;
    /** Can plain `zstd -d` / `tar --zstd -xf` open it without --long? */
    plainZstd: boolean;
  };
}

export function describeBundle(info: BundleHeaderInfo): BundleDescription {
  const { header, location } = info;
  const blobSize = new Map(header.blobs.map((b) => [b.digest, b.size]));
  const users = new Map<Digest, string[]>();
  const images = header.images.map((image) => {
    const name = `${image.ref} (${formatPlatform(image.platform)})`;
    for (const l of image.layers) {
      const list = users.get(l.blob) ?? [];
      if (!list.includes(name)) list.push(name);
      users.set(l.blob, list);
    }
    return {
      ref: image.ref,
      platform: formatPlatform(image.platform),
      manifestDigest: image.manifestDigest,
      configDigest: image.configDigest,
      layers: image.layers.length,
      size: image.size,
    };
  });
  const sharedLayers = [...users]
    .filter(([, list]) => list.length > 1)
    .map(([blob, list]) => ({ blob, size: blobSize.get(blob) ?? 0, images: list }));
  return {
    bundle: location === undefined ? 'stdin' : location.kind === 'file' ? location.path : location.base,
    source: location === undefined ? 'stdin' : location.kind,
    formatVersion: header.formatVersion,
    ferryVersion: header.ferryVersion,
    created: header.created,
    layers: header.layers,
    signed: info.signature !== undefined,
    images,
    sharedLayers,
    totals: {
      images: header.totals.images,
      blobs: header.totals.blobs,
      uncompressedBytes: header.totals.blobBytes,
      compressedBytes: info.compressedSize,
      pulledBytes: header.totals.pulledBytes,
    },
    volumes: location?.kind === 'volumes' ? location.volumes.map((v) => ({ path: v.path, size: v.size })) : [],
    requires: header.requires,
    requiredBytes: header.totals.requiredBytes,
    window: {
      windowLog: header.compression.windowLog,
      level: header.compression.level,
      decodeMemory: header.compression.decodeMemory,
      plainZstd: header.compression.windowLog <= PLAIN_ZSTD_MAX_WINDOW_LOG,
    },
  };
}
