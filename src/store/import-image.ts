import { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Image, IndexInfo } from '../oci/image.js';
import type { ProgressListener } from '../io/progress.js';
import { formatReference, type Reference } from '../oci/reference.js';
import { chainIds } from './layers.js';
import { StoreDestination } from './store-destination.js';
import type { Store } from './store.js';

export interface ImportOptions {
  /** The name to record; default the image's own ref. No name: blobs and layers only. */
  ref?: Reference;
  /** The index the image was resolved from: kept as a blob and recorded in the ref. */
  index?: IndexInfo;
  /** Keep compressed layer blobs (for push/serve) when the source holds them. Default true. */
  keepBlobs?: boolean;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  /** Per-layer progress: bytes are of what was read for that layer. */
  onLayer?: (event: { index: number; diffId: Digest; chainId: Digest; skipped: boolean; bytes: number }) => void;
  /** Live progress per layer (start, bytes of tar unpacked, done). */
  onProgress?: ProgressListener;
}

export interface ImportSummary {
  manifestDigest: Digest;
  /** The ref written, when one was. */
  name: string | undefined;
  /** Bytes written into the store (blobs and unpacked tar bytes). */
  bytesWritten: number;
  /** Bytes the store had already (layers and blobs skipped). */
  bytesPresent: number;
  layersUnpacked: number;
  layersSkipped: number;
  blobsWritten: number;
  blobsPresent: number;
  warnings: string[];
}

/**
 * One local image (a container's commit, an image in memory) into the store, in the store
 * destination's steps: config, layers bottom first, manifest, index, the ref LAST. Locations do not
 * import the transfer engine, so the runtime's commit comes here; every verb that copies from
 * another location goes through transfer's copyImages with the same StoreDestination.
 */
export async function importImage(store: Store, image: Image, options: ImportOptions = {}): Promise<ImportSummary> {
  const destination = new StoreDestination(store, options.keepBlobs === undefined ? {} : { keepBlobs: options.keepBlobs });
  const ref = options.ref ?? image.ref;
  const target = { ref, images: [image], ...(options.index ? { index: options.index } : {}) };
  const summary: ImportSummary = {
    manifestDigest: image.digest,
    name: undefined,
    bytesWritten: 0,
    bytesPresent: 0,
    layersUnpacked: 0,
    layersSkipped: 0,
    blobsWritten: 0,
    blobsPresent: 0,
    warnings: [],
  };
  const put = {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    onWarning: (m: string): void => {
      summary.warnings.push(m);
      options.onWarning?.(m);
    },
  };
  const count = (r: { written: number; existed: boolean }, size: number): void => {
    if (r.existed) {
      summary.blobsPresent++;
      summary.bytesPresent += size;
    } else {
      summary.blobsWritten++;
      summary.bytesWritten += r.written;
    }
  };
  try {
    await destination.prepare(target);
    const config = image.rawConfig;
    count(await destination.putBlob(target, { digest: image.configDigest, size: config.length }, async () => Readable.from([config]), { ...put, kind: 'config' }), config.length);
    const chain = chainIds(image.layers.map((l) => l.diffId));
    const layers = [];
    for (const [index, layer] of image.layers.entries()) {
      const r = await destination.putLayer(target, image, index, put);
      layers.push(r);
      if (r.existed) summary.layersSkipped++;
      else summary.layersUnpacked++;
      summary.bytesWritten += r.written;
      summary.bytesPresent += r.present;
      options.onLayer?.({ index, diffId: layer.diffId, chainId: chain[index]!, skipped: r.existed, bytes: r.existed ? 0 : r.written });
    }
    // Counted here; putManifest and putIndex then find them present.
    const raw = image.rawManifest;
    count(await destination.putBlob(target, { digest: image.digest, size: raw.length }, async () => Readable.from([raw]), { ...put, kind: 'manifest' }), raw.length);
    const indexInfo = options.index;
    if (indexInfo) count(await destination.putBlob(target, { digest: indexInfo.digest, size: indexInfo.raw.length }, async () => Readable.from([indexInfo.raw]), { ...put, kind: 'index' }), indexInfo.raw.length);
    const manifest = await destination.putManifest(target, image, layers, put);
    const index = await destination.putIndex(target, [manifest], put);
    await destination.setRef(target, [manifest], index);
    if (ref !== undefined) summary.name = formatReference(ref);
  } catch (err) {
    await destination.abort();
    throw err;
  }
  await destination.commit();
  return summary;
}
