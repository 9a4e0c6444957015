import { FerryError } from '../errors.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import type { Image, IndexInfo } from '../oci/image.js';
import { formatReference, type Reference } from '../oci/reference.js';
import { decompressLayer } from '../io/layer-forms.js';
import type { ProgressListener } from '../io/progress.js';
import { chainIdOf, type UnpackLayerResult } from './layers.js';
import { ensureFreeSpace } from './space.js';
import type { Store } from './store.js';
import { tee } from '../io/tee.js';

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
 * Copy any Image into the store: manifest and config blobs, each layer unpacked once (skipped
 * when its chainId is present), compressed blobs kept when the source has them, the ref LAST.
 * A crash at any point leaves the old state plus unreferenced content that gc removes.
 */
export async function importImage(store: Store, image: Image, options: ImportOptions = {}): Promise<ImportSummary> {
  const what = image.ref === undefined ? `image ${image.digest}` : formatReference(image.ref);
  const diffIds = image.config.rootfs.diff_ids;
  if (diffIds.length !== image.layers.length) {
    throw new FerryError('INVALID_MANIFEST', `${what}: the manifest lists ${image.layers.length} layers but the config has ${diffIds.length} diff_ids`);
  }
  image.layers.forEach((layer, i) => {
    if (layer.diffId !== diffIds[i]) {
      throw new FerryError('INVALID_MANIFEST', `${what}: layer ${i} has diffId ${layer.diffId} but the config says ${String(diffIds[i])}`);
    }
  });
  const keepBlobs = options.keepBlobs ?? true;
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
  const warn = (message: string): void => {
    summary.warnings.push(message);
    options.onWarning?.(message);
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
  const ingestOptions = (w: string): { what: string; signal?: AbortSignal } => (options.signal ? { what: w, signal: options.signal } : { what: w });

  const lease = await store.lease();
  try {
    // Space: what is not there yet, as far as the source knows its sizes.
    let needed = 0;
    let parent: Digest | undefined;
    for (const layer of image.layers) {
      parent = chainIdOf(parent, layer.diffId);
      if (!(await store.layers.has(parent))) {
        needed += layer.tarSize ?? layer.descriptor.size * 3;
        if (keepBlobs && layer.stored === 'blob') needed += layer.descriptor.size;
      }
    }
    await ensureFreeSpace(store.root, needed, `import ${what}`);

    count(await store.blobs.put(image.rawConfig, image.configDigest, ingestOptions(`config of ${what}`)), image.rawConfig.length);
    count(await store.blobs.put(image.rawManifest, image.digest, ingestOptions(`manifest of ${what}`)), image.rawManifest.length);
    if (options.index) count(await store.blobs.put(options.index.raw, options.index.digest, ingestOptions(`index of ${what}`)), options.index.raw.length);

    parent = undefined;
    for (const [index, layer] of image.layers.entries()) {
      const chainId = chainIdOf(parent, layer.diffId);
      const layerWhat = `${what} layer ${index} (${layer.descriptor.digest})`;
      const keepBlob = keepBlobs && layer.stored === 'blob' && layer.descriptor.digest !== layer.diffId;
      if (await store.layers.has(chainId)) {
        summary.layersSkipped++;
        summary.bytesPresent += layer.tarSize ?? (await store.layers.meta(chainId))?.size ?? 0;
        if (keepBlob && !(await store.blobs.has(layer.descriptor.digest))) {
          count(await store.blobs.ingest(await layer.blob(options), layer.descriptor.digest, layer.descriptor.size, ingestOptions(`blob of ${layerWhat}`)), layer.descriptor.size);
        }
        options.onLayer?.({ index, diffId: layer.diffId, chainId, skipped: true, bytes: 0 });
        options.onProgress?.({ kind: 'done', id: chainId, label: `layer ${shortDigest(layer.diffId)}`, bytes: layer.tarSize ?? 0, skipped: true });
      } else {
        const label = `layer ${shortDigest(layer.diffId)}`;
        const progress = options.onProgress;
        progress?.({ kind: 'start', id: chainId, label, ...(layer.tarSize === undefined ? {} : { total: layer.tarSize }) });
        const unpackOptions = {
          what: layerWhat,
          onWarning: warn,
          ...(progress ? { onBytes: (bytes: number) => progress({ kind: 'advance', id: chainId, bytes }) } : {}),
        };
        let result: UnpackLayerResult;
        if (keepBlob && !(await store.blobs.has(layer.descriptor.digest))) {
          // One read of the blob feeds both the content store and the unpacker.
          const blob = await layer.blob(options);
          const [toStore, toUnpack] = tee(blob);
          const tar = decompressLayer(toUnpack, layer.descriptor.mediaType, layerWhat);
          const [ingested, unpacked] = await settleBoth(
            store.blobs.ingest(toStore, layer.descriptor.digest, layer.descriptor.size, ingestOptions(`blob of ${layerWhat}`)),
            store.layers.unpack(tar, layer.diffId, parent, unpackOptions),
            (err) => blob.destroy(err),
          );
          count(ingested, layer.descriptor.size);
          result = unpacked;
        } else {
          result = await store.layers.unpack(await layer.tar(options), layer.diffId, parent, unpackOptions);
        }
        if (result.skipped) {
          summary.layersSkipped++;
          summary.bytesPresent += result.size;
        } else {
          summary.layersUnpacked++;
          summary.bytesWritten += result.size;
        }
        options.onLayer?.({ index, diffId: layer.diffId, chainId, skipped: result.skipped, bytes: result.size });
        progress?.({ kind: 'done', id: chainId, label, bytes: result.size, skipped: result.skipped });
      }
      await store.layers.addCompressedDigest(chainId, layer.descriptor.digest);
      parent = chainId;
    }

    const ref = options.ref ?? image.ref;
    if (ref !== undefined) {
      const name = formatReference(ref);
      const entry: Parameters<Store['setRef']>[0] = { name, manifestDigest: image.digest, mediaType: image.mediaType, platform: image.platform };
      if (options.index) entry.indexDigest = options.index.digest;
      await store.setRef(entry);
      summary.name = name;
    }
    return summary;
  } finally {
    await lease.release();
  }
}


/** Await two tasks fed by one stream: when one fails, abort the source so the other ends too. */
async function settleBoth<A, B>(a: Promise<A>, b: Promise<B>, abort: (err: Error) => void): Promise<[A, B]> {
  const onError = (err: unknown): never => {
    abort(err instanceof Error ? err : new Error(String(err)));
    throw err;
  };
  const [ra, rb] = await Promise.allSettled([a.catch(onError), b.catch(onError)]);
  if (ra.status === 'rejected' || rb.status === 'rejected') {
    // The first real failure is the cause; the other side usually just saw the abort.
    const errors = [ra, rb].flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    throw errors.find((e) => e instanceof FerryError) ?? errors[0];
  }
  return [ra.value, rb.value];
}
