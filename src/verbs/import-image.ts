import type { CopyInto } from '../oci/destination.js';
import type { Digest } from '../oci/digest.js';
import type { Image, IndexInfo } from '../oci/image.js';
import type { ProgressListener } from '../oci/progress-event.js';
import type { Reference } from '../oci/reference.js';
import { StoreDestination, type Store } from '../store/index.js';
import { copyImages } from '../transfer/copy-images.js';

export interface ImportOptions {
  /** The name to record; default the image's own ref. No name: blobs and layers only. */
  ref?: Reference;
  /** The index the image was resolved from: kept as a blob and recorded in the ref. */
  index?: IndexInfo;
  /** Keep compressed layer blobs (for push/serve) when the source holds them. Default true. */
  keepBlobs?: boolean;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
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
 * One image (in memory, from any location) into the store: the transfer engine's copy into the
 * store destination (config, layers bottom first, manifest, index, the name last).
 */
export async function importImage(store: Store, image: Image, options: ImportOptions = {}): Promise<ImportSummary> {
  const ref = options.ref ?? image.ref;
  const [copied] = await copyImages(
    [{ ref, images: [image], ...(options.index ? { index: options.index } : {}) }],
    new StoreDestination(store, options.keepBlobs === undefined ? {} : { keepBlobs: options.keepBlobs }),
    {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
    },
  );
  const r = copied!;
  return {
    manifestDigest: r.images[0]!.digest,
    name: r.ref,
    bytesWritten: r.bytesWritten,
    bytesPresent: r.bytesPresent,
    layersUnpacked: r.layersWritten,
    layersSkipped: r.layersPresent,
    blobsWritten: r.blobsWritten,
    blobsPresent: r.blobsPresent,
    warnings: r.warnings,
  };
}

/** The copy commit and build hand their images to: the transfer engine into the store destination. */
export function copyIntoStore(store: Store): CopyInto {
  return async (targets) => (await copyImages(targets, new StoreDestination(store))).map((r) => r.ref);
}
