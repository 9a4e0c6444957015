import type { KeyObject } from 'node:crypto';
import type { Readable } from 'node:stream';
import { openBundleStream, type BundleInput } from '../bundle/read-bundle.js';
import type { BundleHeader, BundleImage } from '../bundle/format.js';
import { FerryError } from '../errors.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import { platformMatches, type Platform } from '../oci/platform.js';
import { decompressLayer } from '../io/layer-forms.js';
import type { ProgressListener } from '../io/progress.js';
import { chainIdOf, ensureFreeSpace, type Store } from '../store/index.js';
import { tee } from '../io/tee.js';

/**
 * `ferry import BUNDLE`: one streaming pass over the bundle, driving the store's public steps:
 * manifests and configs (first in the bundle) are ingested, each layer is unpacked as it flows
 * past (its compressed blob kept when the bundle carries it as pulled), and every image's ref is
 * written last. A layer whose parent has not arrived yet, or that several layer stacks use, is
 * kept as a blob first and unpacked from the store afterwards.
 */
export interface ImportBundleOptions {
  publicKey?: KeyObject | string;
  /** Only images of these platforms (default: every image in the bundle). */
  platforms?: Platform[];
  keepBlobs?: boolean;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  onImage?: (image: BundleImage) => void;
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

interface LayerUse {
  chainId: Digest;
  parent: Digest | undefined;
  diffId: Digest;
  /** The layer's digest in its original manifest (recorded as a compressed form). */
  digest: Digest;
  tarSize: number | undefined;
  what: string;
}

export async function importBundle(store: Store, input: BundleInput, options: ImportBundleOptions = {}): Promise<ImportBundleSummary> {
  const keepBlobs = options.keepBlobs ?? true;
  const summary: ImportBundleSummary = { images: [], layersUnpacked: 0, layersSkipped: 0, blobsWritten: 0, bytesWritten: 0, bytesPresent: 0, warnings: [] };
  const warn = (m: string): void => {
    summary.warnings.push(m);
    options.onWarning?.(m);
  };
  const events = openBundleStream(input, { ...(options.publicKey ? { publicKey: options.publicKey } : {}), ...(options.signal ? { signal: options.signal } : {}) });
  const first = await events.next();
  if (first.done === true || first.value.type !== 'header') throw new FerryError('BUNDLE_INVALID', 'bundle: no header');
  const header: BundleHeader = first.value.header;
  const images = header.images.filter((i) => options.platforms === undefined || options.platforms.some((p) => platformMatches(p, i.platform)));
  if (images.length === 0) {
    throw new FerryError('PLATFORM_NOT_FOUND', `bundle holds no image for ${options.platforms?.map((p) => `${p.os}/${p.architecture}`).join(', ')}`);
  }
  const inBundle = new Set(header.blobs.map((b) => b.digest as string));

  // Plan: which layer stacks are missing, and which bundle blob feeds each.
  const uses = new Map<string, LayerUse[]>();
  const planned = new Set<string>();
  let needed = 0;
  for (const image of images) {
    let parent: Digest | undefined;
    for (const [i, layer] of image.layers.entries()) {
      const chainId = chainIdOf(parent, layer.diffId);
      const present = planned.has(chainId) ? undefined : await store.layers.meta(chainId);
      if (present !== undefined) {
        planned.add(chainId);
        summary.layersSkipped++;
        summary.bytesPresent += present.size;
      } else if (!planned.has(chainId)) {
        if (!inBundle.has(layer.blob)) {
          throw new FerryError('NOT_FOUND', `import ${image.ref}: layer ${i} (${layer.digest}) is not in this delta bundle and not in the store`, {
            hint: 'import the bundle this delta was made against first, or export a full bundle',
          });
        }
        planned.add(chainId);
        const list = uses.get(layer.blob) ?? [];
        list.push({ chainId, parent, diffId: layer.diffId, digest: layer.digest, tarSize: layer.tarSize, what: `${image.ref} layer ${i} (${layer.digest})` });
        uses.set(layer.blob, list);
        needed += layer.tarSize ?? layer.size * 3;
      }
      parent = chainId;
    }
  }
  await ensureFreeSpace(store.root, needed, 'import bundle');

  const lease = await store.lease();
  const deferred: Array<{ use: LayerUse; blob: Digest; mediaType: string }> = [];
  const unpack = async (tar: Readable, use: LayerUse): Promise<void> => {
    const progress = options.onProgress;
    const label = `layer ${shortDigest(use.diffId)}`;
    progress?.({ kind: 'start', id: use.chainId, label, ...(use.tarSize === undefined ? {} : { total: use.tarSize }) });
    const r = await store.unpackLayer(tar, use.diffId, use.parent, {
      what: use.what,
      onWarning: warn,
      ...(progress ? { onBytes: (bytes: number) => progress({ kind: 'advance', id: use.chainId, bytes }) } : {}),
    });
    progress?.({ kind: 'done', id: use.chainId, label, bytes: r.size, skipped: r.skipped });
    if (r.skipped) {
      summary.layersSkipped++;
      summary.bytesPresent += use.tarSize ?? r.size;
    } else {
      summary.layersUnpacked++;
      summary.bytesWritten += r.size;
    }
    await store.layers.addCompressedDigest(use.chainId, use.digest);
  };
  const runDeferred = async (): Promise<void> => {
    for (let progress = true; progress; ) {
      progress = false;
      for (const d of [...deferred]) {
        if (d.use.parent !== undefined && !(await store.layers.has(d.use.parent))) continue;
        deferred.splice(deferred.indexOf(d), 1);
        await unpack(decompressLayer(await store.blobs.open(d.blob), d.mediaType, d.use.what), d.use);
        progress = true;
      }
    }
  };
  try {
    for await (const event of events) {
      if (event.type !== 'blob') continue;
      const ingest = async (stream: Readable): Promise<void> => {
        const r = await store.ingestBlob(stream, event.digest, event.size, { what: `${event.kind} ${event.digest}` });
        if (!r.existed) {
          summary.blobsWritten++;
          summary.bytesWritten += r.written;
        } else summary.bytesPresent += event.size;
      };
      if (event.kind !== 'layer') {
        // Rewritten manifests only serve the bundle's own OCI layout; the original is kept.
        if (event.encoding !== 'rewritten') await ingest(event.stream);
        continue;
      }
      const pending = (uses.get(event.digest) ?? []).filter((u) => !deferred.some((d) => d.use.chainId === u.chainId));
      const keep = keepBlobs && event.encoding === 'as-pulled';
      const ready = pending.length === 1 && (pending[0]!.parent === undefined || (await store.layers.has(pending[0]!.parent)));
      if (pending.length === 0) {
        if (keep) await ingest(event.stream);
      } else if (ready && keep) {
        const [toStore, toUnpack] = tee(event.stream);
        await Promise.all([ingest(toStore), unpack(decompressLayer(toUnpack, event.mediaType, pending[0]!.what), pending[0]!)].map((p) => p.catch((err: unknown) => {
          event.stream.destroy(err as Error);
          throw err;
        })));
      } else if (ready) {
        await unpack(decompressLayer(event.stream, event.mediaType, pending[0]!.what), pending[0]!);
      } else {
        await ingest(event.stream);
        for (const use of pending) deferred.push({ use, blob: event.digest, mediaType: event.mediaType });
      }
      await runDeferred();
    }
    await runDeferred();
    if (deferred.length > 0) {
      throw new FerryError('BUNDLE_INVALID', `import bundle: ${deferred.length} layer(s) could not be placed: their parent layers never arrived (${deferred[0]!.use.what})`);
    }
    // Names last: every image is complete in the store before any ref points at it, and all of
    // them in one rewrite of refs.json (one per image is quadratic in the number of images).
    const refs: Array<Parameters<Store['setRef']>[0]> = [];
    for (const image of images) {
      // The index (recorded by newer bundles) was ingested with the manifests: the ref names it,
      // as an import from a registry or an OCI layout does, so inspect and push see the index.
      const indexDigest = image.index?.digest;
      for (const d of [image.manifestDigest, image.configDigest, ...(indexDigest === undefined ? [] : [indexDigest])]) {
        if (!(await store.blobs.has(d))) throw new FerryError('BUNDLE_INVALID', `import ${image.ref}: blob ${d} was not in the bundle`);
      }
      refs.push({
        name: image.ref,
        manifestDigest: image.manifestDigest,
        mediaType: image.manifestMediaType,
        platform: image.platform,
        ...(indexDigest === undefined ? {} : { indexDigest }),
      });
    }
    await store.setRefs(refs);
    for (const image of images) {
      summary.images.push({ ref: image.ref, platform: image.platform, manifestDigest: image.manifestDigest });
      options.onImage?.(image);
    }
    return summary;
  } finally {
    await lease.release();
  }
}

