import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { openBundleSource, type BundleInput, type OpenedBundle } from '../bundle/index.js';
import type { Digest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import { formatReference } from '../oci/reference.js';
import { chainIds, ownedName, StoreDestination, type Store } from '../store/index.js';
import { copyImages } from '../transfer/copy-images.js';

export interface ImportBundleOptions {
  publicKey?: KeyObject | string;
  /** Only images of these platforms (default: every image in the bundle). */
  platforms?: Platform[];
  keepBlobs?: boolean;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  onProgress?: ProgressListener;
}

export interface ImportBundleSummary {
  images: Array<{ ref: string; platform: Platform; manifestDigest: Digest }>;
  layersUnpacked: number;
  layersSkipped: number;
  blobsWritten: number;
  bytesWritten: number;
  /** Bytes the store had already: skipped layers (their tar size) and blobs. */
  bytesPresent: number;
  warnings: string[];
}

/**
 * `ferry import BUNDLE`: the bundle read as a one-pass source and copied into the store by the
 * transfer engine, layers taken in stream order (each unpacked as it flows past, its blob kept
 * when the bundle carries it as pulled); a layer wanted again or out of order is spooled in the
 * store's tmp/ as it passes. The bundle is read to its end and checked before any name is set.
 */
export async function importBundle(store: Store, input: BundleInput, options: ImportBundleOptions = {}): Promise<ImportBundleSummary> {
  const keepBlobs = options.keepBlobs ?? true;
  const source = await openBundleSource(input, {
    // In tmp/ under this process's name: a crash leaves it to the next open's sweep.
    documents: join(store.tmpDir, ownedName('documents')),
    ...(options.publicKey ? { publicKey: options.publicKey } : {}),
    ...(options.platforms ? { platforms: options.platforms } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  try {
    const uses = await layerUses(store, source, keepBlobs);
    source.expect(uses, (digest) => join(store.tmpDir, ownedName(`spool-${digest.slice(digest.indexOf(':') + 1, digest.indexOf(':') + 13)}`)), { destination: 'the store' });
    const results = await copyImages(source.targets, new StoreDestination(store, { keepBlobs, shareStacks: true }), {
      order: source.order,
      beforeNames: () => source.finish(),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
    });
    const summary: ImportBundleSummary = { images: [], layersUnpacked: 0, layersSkipped: 0, blobsWritten: 0, bytesWritten: 0, bytesPresent: 0, warnings: [] };
    for (const [i, r] of results.entries()) {
      const target = source.targets[i]!;
      for (const image of target.images) summary.images.push({ ref: formatReference(target.ref), platform: source.entries.get(image)!.platform, manifestDigest: image.digest });
      summary.layersUnpacked += r.layersWritten;
      summary.layersSkipped += r.layersPresent;
      summary.blobsWritten += r.blobsWritten;
      summary.bytesWritten += r.bytesWritten;
      summary.bytesPresent += r.bytesPresent;
      summary.warnings.push(...r.warnings);
    }
    return summary;
  } finally {
    await source.close();
  }
}

/**
 * What the store lacks, and so how often each layer blob will be opened: once per missing layer
 * stack, once more for a blob kept beside a stack the store has. Its own function: the stacks it
 * walks (a chainId string each) die here, not with the import's frame at its end.
 */
async function layerUses(store: Store, source: OpenedBundle, keepBlobs: boolean): Promise<Map<Digest, number>> {
  const uses = new Map<Digest, number>();
  const stacks = new Set<string>();
  const kept = new Set<string>();
  for (const image of source.targets.flatMap((t) => t.images)) {
    const layers = image.layers;
    const chain = chainIds(layers.map((l) => l.diffId));
    for (const [i, layer] of layers.entries()) {
      const blob = source.entries.get(image)!.layers[i]!.blob;
      const keepsBlob = keepBlobs && layer.stored === 'blob' && layer.descriptor.digest !== layer.diffId;
      if (stacks.has(chain[i]!)) continue;
      stacks.add(chain[i]!);
      if (!(await store.layers.has(chain[i]!))) uses.set(blob, (uses.get(blob) ?? 0) + 1);
      else if (keepsBlob && !kept.has(blob) && !(await store.blobs.has(layer.descriptor.digest))) {
        kept.add(blob);
        uses.set(blob, (uses.get(blob) ?? 0) + 1);
      }
    }
  }
  return uses;
}
