import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import { nodeZlib } from './builtins.js';
import type { Descriptor } from '../oci/descriptor.js';
import type { Digest } from '../oci/digest.js';
import type { Layer, OpenOptions } from '../oci/image.js';
import { layerCompression } from '../oci/media-types.js';
import { markVerified, VerifyDigest, type VerifyOptions } from './verify-digest.js';
import { zstdDecompressStream } from './zstd.js';

/**
 * Pipe `source` through `stages` and return the readable end. Errors of any stage reach the
 * returned stream (pipeline destroys the rest), so a consumer sees a digest mismatch as an error.
 */
export function chain(source: Readable, ...stages: NodeJS.ReadWriteStream[]): Readable {
  const out = new PassThrough();
  pipeline([source, ...stages, out]).catch((err: unknown) => out.destroy(err as Error));
  return out;
}

/** `source` checked against `digest` as it streams, and marked so (a consumer need not hash it again). */
function verifiedAs(source: Readable, digest: Digest, options: VerifyOptions): Readable {
  return markVerified(chain(source, new VerifyDigest(digest, options)), digest);
}

/**
 * gunzip output chunk size. zlib's default (16 KiB) makes one thread-pool round trip, one
 * digest update and one stream hop per 16 KiB; 256 KiB chunks cut the CPU of gunzip + verify by
 * ~40% (254 MB layer: 1.35 -> 0.80 s) and a warm 7-image export by ~12%, memory unchanged.
 */
const GUNZIP_CHUNK = 256 * 1024;
const GUNZIP_MIN_CHUNK = 16 * 1024;

/**
 * The gunzip chunk for a blob of `size` compressed bytes: zlib allocates a whole chunk when it
 * starts and whenever one fills, so a layer smaller than a chunk paid for 256 KiB of buffer per
 * read (a tar is rarely smaller than its gzip: a chunk of the next power of two above the blob's
 * size is seldom filled twice).
 */
function gunzipChunk(size: number | undefined): number {
  if (size === undefined || size >= GUNZIP_CHUNK) return GUNZIP_CHUNK;
  let chunk = GUNZIP_MIN_CHUNK;
  while (chunk < size) chunk *= 2;
  return chunk;
}

/**
 * Decompress a layer blob of the given media type into its tar stream (no verification).
 * `size`: the blob's compressed size, when known (sizes the buffers of a small one).
 */
export function decompressLayer(blob: Readable, mediaType: string, what: string, size?: number): Readable {
  const compression = layerCompression(mediaType);
  switch (compression) {
    case 'none':
      return blob;
    case 'gzip':
      return chain(blob, nodeZlib().createGunzip({ chunkSize: gunzipChunk(size) }));
    case 'zstd':
      // zstd's default window limit: a layer's frame cannot make the decoder take GBs.
      return chain(blob, zstdDecompressStream({ what }));
    default:
      throw unsupportedLayer(mediaType, what);
  }
}

function unsupportedLayer(mediaType: string, what: string): FerryError {
  return new FerryError('UNSUPPORTED', `${what}: cannot decompress layer media type "${mediaType}"`);
}

export interface BlobLayerSource {
  descriptor: Descriptor;
  diffId: Digest;
  /** Open the blob bytes (unverified); the layer verifies them. */
  openBlob(options?: OpenOptions): Promise<Readable>;
  /** Names the image and layer in errors. */
  what: string;
}

/**
 * A Layer for locations that hold the blob as distributed (registries, archives, as-pulled
 * bundles): `blob()` verifies the digest, `tar()` decompresses and verifies the diffId.
 */
export function layerFromBlob(source: BlobLayerSource): Layer {
  const { descriptor, diffId, what } = source;
  const verifiedBlob = async (options?: OpenOptions): Promise<Readable> =>
    chain(await source.openBlob(options), new VerifyDigest(descriptor.digest, { size: descriptor.size, what: `${what} blob ${descriptor.digest}` }));
  return {
    descriptor,
    diffId,
    stored: 'blob',
    blob: verifiedBlob,
    async tar(options?: OpenOptions): Promise<Readable> {
      // Refuse before opening: a blob stream opened and then abandoned would leak its file handle.
      if (layerCompression(descriptor.mediaType) === undefined) throw unsupportedLayer(descriptor.mediaType, what);
      const tar = decompressLayer(await verifiedBlob(options), descriptor.mediaType, `${what} blob ${descriptor.digest}`, descriptor.size);
      return verifiedAs(tar, diffId, { what: `${what} layer ${descriptor.digest} (diffId ${diffId})` });
    },
  };
}

export interface TarLayerSource {
  descriptor: Descriptor;
  diffId: Digest;
  tarSize?: number;
  /** Open the uncompressed tar (unverified); the layer verifies it against diffId. */
  openTar(options?: OpenOptions): Promise<Readable>;
  what: string;
}

/**
 * A Layer for locations that hold only the uncompressed tar (raw bundles, docker-archives whose
 * layers are plain tars): `blob()` works only when the descriptor itself names the tar.
 */
export function layerFromTar(source: TarLayerSource): Layer {
  const { descriptor, diffId, what } = source;
  const verifiedTar = async (options?: OpenOptions): Promise<Readable> =>
    verifiedAs(await source.openTar(options), diffId, source.tarSize === undefined ? { what: `${what} layer ${diffId}` } : { size: source.tarSize, what: `${what} layer ${diffId}` });
  const layer: Layer = {
    descriptor,
    diffId,
    stored: 'tar',
    tar: verifiedTar,
    async blob(options?: OpenOptions): Promise<Readable> {
      if (descriptor.digest === diffId) return verifiedTar(options);
      throw new FerryError('NOT_FOUND', `${what}: blob ${descriptor.digest} is not held here, only the uncompressed layer ${diffId}`, {
        hint: 'export with --layers as-pulled to keep registry blobs byte for byte',
      });
    },
  };
  return source.tarSize === undefined ? layer : { ...layer, tarSize: source.tarSize };
}
