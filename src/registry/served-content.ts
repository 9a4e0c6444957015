import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Image, IndexInfo } from '../oci/image.js';
import type { Reference } from '../oci/reference.js';
import { chain } from '../io/layer-forms.js';
import type { RegistryContent, ServedBlob, ServedManifest } from './server.js';

/** An image (or a multi-platform set of them) to serve under a repository and tag. */
export interface ServedImage {
  ref: Reference;
  images: Image[];
  index?: IndexInfo;
}

/** Pass through only bytes [start, end] of a stream: Range over sources that can only stream from 0. */
class ByteWindow extends Transform {
  private offset = 0;
  private readonly first: number;
  private readonly last: number;
  constructor(first: number, last: number) {
    super();
    this.first = first;
    this.last = last;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const from = Math.max(0, this.first - this.offset);
    const to = Math.min(chunk.length, this.last + 1 - this.offset);
    this.offset += chunk.length;
    if (to > from) this.push(chunk.subarray(from, to));
    done();
  }
}

/** Expose images read from any location through the read-only registry server. */
export function contentFromImages(entries: ServedImage[]): RegistryContent {
  const repos = new Map<string, Map<string, ServedManifest>>();
  const manifests = new Map<string, ServedManifest>();
  const blobs = new Map<string, Map<Digest, ServedBlob>>();
  for (const entry of entries) {
    const repository = entry.ref.repository;
    const tags = repos.get(repository) ?? new Map<string, ServedManifest>();
    repos.set(repository, tags);
    const repoBlobs = blobs.get(repository) ?? new Map<Digest, ServedBlob>();
    blobs.set(repository, repoBlobs);
    for (const image of entry.images) {
      const m: ServedManifest = { bytes: image.rawManifest, mediaType: image.mediaType, digest: image.digest };
      manifests.set(`${repository}@${image.digest}`, m);
      const config = image.rawConfig;
      repoBlobs.set(image.configDigest, {
        size: config.length,
        mediaType: image.manifest.config.mediaType,
        open: async (range) => Readable.from([range ? config.subarray(range.start, range.end + 1) : config]),
      });
      for (const layer of image.layers) {
        repoBlobs.set(layer.descriptor.digest, {
          size: layer.descriptor.size,
          mediaType: layer.descriptor.mediaType,
          open: async (range): Promise<Readable> => {
            const stream = await layer.blob();
            return range ? chain(stream, new ByteWindow(range.start, range.end)) : stream;
          },
        });
      }
    }
    let top: ServedManifest | undefined;
    if (entry.index) {
      top = { bytes: entry.index.raw, mediaType: entry.index.mediaType, digest: entry.index.digest };
      manifests.set(`${repository}@${entry.index.digest}`, top);
    } else if (entry.images[0]) {
      const image = entry.images[0];
      top = { bytes: image.rawManifest, mediaType: image.mediaType, digest: image.digest };
    }
    if (top && entry.ref.tag) tags.set(entry.ref.tag, top);
  }
  return {
    async manifest(repository, reference) {
      return repos.get(repository)?.get(reference) ?? manifests.get(`${repository}@${reference}`);
    },
    async blob(repository, digest) {
      return blobs.get(repository)?.get(digest);
    },
    async tags(repository) {
      const t = repos.get(repository);
      return t ? [...t.keys()] : undefined;
    },
    async repositories() {
      return [...repos.keys()];
    },
  };
}
