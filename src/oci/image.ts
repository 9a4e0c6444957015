import type { Readable } from 'node:stream';
import type { Descriptor } from './descriptor.js';
import type { Digest } from './digest.js';
import { layerCompression } from './media-types.js';
import type { ImageConfig, ImageManifest } from './manifest.js';
import type { Platform } from './platform.js';
import type { Reference } from './reference.js';

/**
 * The interface is the architecture: every location (registry, docker-archive, OCI layout,
 * bundle, store) yields these, and every consumer (bundle writer, importer, push) takes them
 * without naming the producer.
 */

export interface OpenOptions {
  signal?: AbortSignal;
}

export interface Layer {
  /** The layer as the image's manifest lists it: `digest` is of the blob as distributed. */
  readonly descriptor: Descriptor;
  /** Digest of the uncompressed tar (the config's rootfs.diff_ids entry). */
  readonly diffId: Digest;
  /** Which form this location holds as is; the other one costs a (de)compression. */
  readonly stored: 'blob' | 'tar';
  /** Size of the uncompressed tar, when this location knows it. */
  readonly tarSize?: number;
  /**
   * The blob bytes named by `descriptor.digest`, verified while streaming (the stream errors at its
   * end on a mismatch). Rejects with NOT_FOUND when this location holds only the tar.
   */
  blob(options?: OpenOptions): Promise<Readable>;
  /** The uncompressed layer tar, verified against `diffId` while streaming. */
  tar(options?: OpenOptions): Promise<Readable>;
}

export interface Image {
  /** The reference this image is known by in its location (tag and/or digest), if any. */
  readonly ref: Reference | undefined;
  /** Digest of `rawManifest`: the image's identity. */
  readonly digest: Digest;
  readonly mediaType: string;
  readonly rawManifest: Buffer;
  readonly manifest: ImageManifest;
  readonly configDigest: Digest;
  readonly rawConfig: Buffer;
  readonly config: ImageConfig;
  readonly platform: Platform;
  readonly layers: readonly Layer[];
}

/** A multi-platform index as served, kept so it can be written again byte for byte. */
export interface IndexInfo {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly raw: Buffer;
}

/** What resolving a reference at a location gives: the chosen images, and the index they came from. */
export interface Resolved {
  readonly images: Image[];
  readonly index?: IndexInfo;
}

/** Total bytes of an image's layers as distributed. */
export function imageBlobSize(image: Image): number {
  return image.layers.reduce((sum, l) => sum + l.descriptor.size, 0);
}

/** The same image with other layer implementations (e.g. read from a cache); fields copied explicitly so class getters survive. */
export function withLayers(image: Image, layers: readonly Layer[]): Image {
  return {
    ref: image.ref,
    digest: image.digest,
    mediaType: image.mediaType,
    rawManifest: image.rawManifest,
    manifest: image.manifest,
    configDigest: image.configDigest,
    rawConfig: image.rawConfig,
    config: image.config,
    platform: image.platform,
    layers,
  };
}

/** A layer goes to a registry as it is when the location holds its compressed blob. */
export function holdsCompressedBlob(layer: Layer): boolean {
  const compression = layerCompression(layer.descriptor.mediaType);
  return layer.stored === 'blob' && compression !== undefined && compression !== 'none';
}
