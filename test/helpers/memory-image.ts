import { gzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import type { Image, Layer } from '../../src/oci/image.js';
import { MediaType } from '../../src/oci/media-types.js';
import { configPlatform, parseImageConfig, parseManifest, type ImageManifest } from '../../src/oci/manifest.js';
import { parseReference } from '../../src/oci/reference.js';
import { layerFromBlob, layerFromTar } from '../../src/io/layer-forms.js';

/**
 * An `Image` held in memory, built from layer tars (see tar-builder.ts): the smallest real
 * location, for store tests. `opened` counts how often each layer's tar or blob was opened.
 */
export interface MemoryImage extends Image {
  opened: { tar: number[]; blob: number[] };
  blobs: Map<string, Buffer>;
}

export interface MemoryImageOptions {
  ref?: string;
  /** 'blob': gzip blobs (registry-like); 'tar': only the uncompressed tars (raw bundle-like). */
  stored?: 'blob' | 'tar';
  architecture?: string;
  /** Extra config fields (to make two images with the same layers differ). */
  labels?: Record<string, string>;
}

export function memoryImage(tars: Buffer[], options: MemoryImageOptions = {}): MemoryImage {
  const stored = options.stored ?? 'blob';
  const opened = { tar: tars.map(() => 0), blob: tars.map(() => 0) };
  const blobs = new Map<string, Buffer>();
  const diffIds = tars.map((t) => digestOf(t));
  const layerBlobs = tars.map((t) => (stored === 'blob' ? gzipSync(t) : t));
  const descriptors = layerBlobs.map((b) => ({
    mediaType: stored === 'blob' ? MediaType.ociLayerGzip : MediaType.ociLayer,
    digest: digestOf(b),
    size: b.length,
  }));
  const rawConfig = Buffer.from(
    JSON.stringify({
      architecture: options.architecture ?? 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'], Labels: options.labels ?? {} },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const configDigest = digestOf(rawConfig);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: rawConfig.length },
    layers: descriptors,
  };
  const rawManifest = Buffer.from(JSON.stringify(manifest));
  const parsed = parseManifest(rawManifest, MediaType.ociManifest, 'memory image');
  if (parsed.kind !== 'image') throw new Error('memory image: not an image manifest');
  const config = parseImageConfig(rawConfig, 'memory config');
  const layers: Layer[] = tars.map((tar, i) => {
    const descriptor = descriptors[i]!;
    const diffId = diffIds[i]! as Digest;
    blobs.set(descriptor.digest, layerBlobs[i]!);
    if (stored === 'blob') {
      const layer = layerFromBlob({
        descriptor,
        diffId,
        what: `memory layer ${i}`,
        openBlob: async () => {
          opened.blob[i]!++;
          return Readable.from([layerBlobs[i]!]);
        },
      });
      // Count tar() opens too (layerFromBlob's tar() goes through openBlob).
      return {
        ...layer,
        tar: async (o) => {
          opened.tar[i]!++;
          opened.blob[i]!--;
          return layer.tar(o);
        },
      };
    }
    return layerFromTar({
      descriptor,
      diffId,
      tarSize: tar.length,
      what: `memory layer ${i}`,
      openTar: async () => {
        opened.tar[i]!++;
        return Readable.from([tar]);
      },
    });
  });
  blobs.set(configDigest, rawConfig);
  const digest = digestOf(rawManifest);
  blobs.set(digest, rawManifest);
  return {
    ref: options.ref === undefined ? undefined : parseReference(options.ref),
    digest,
    mediaType: MediaType.ociManifest,
    rawManifest,
    manifest: parsed.manifest,
    configDigest,
    rawConfig,
    config,
    platform: configPlatform(config),
    layers,
    opened,
    blobs,
  };
}
