import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import type { BlobPut, BlobPutOptions, CopyTarget, ImageDestination, LayerPut, ManifestPut, OpenBytes, PutOptions } from '../oci/destination.js';
import type { Descriptor } from '../oci/descriptor.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import type { Image } from '../oci/image.js';
import { formatReference } from '../oci/reference.js';
import { decompressLayer } from '../io/layer-forms.js';
import { tee } from '../io/tee.js';
import { chainIds, type UnpackLayerResult } from './layers.js';
import { ensureFreeSpace } from './space.js';
import type { RefEntry } from './refs.js';
import type { Lease, Store } from './store.js';

export interface StoreDestinationOptions {
  /** Keep compressed layer blobs (for push/serve) when the source holds them. Default true. */
  keepBlobs?: boolean;
  /**
   * A layer stack several images of one copy use is copied and counted once (a bundle import
   * counts stacks); otherwise each later image finds it present (an archive import counts per image).
   */
  shareStacks?: boolean;
}

function nameOf(image: Image): string {
  return image.ref === undefined ? `image ${image.digest}` : formatReference(image.ref);
}

/** The manifest must list exactly the config's diff_ids: checked before any byte is written. */
export function checkDiffIds(image: Image): void {
  const what = nameOf(image);
  const diffIds = image.config.rootfs.diff_ids;
  if (diffIds.length !== image.layers.length) {
    throw new FerryError('INVALID_MANIFEST', `${what}: the manifest lists ${image.layers.length} layers but the config has ${diffIds.length} diff_ids`);
  }
  image.layers.forEach((layer, i) => {
    if (layer.diffId !== diffIds[i]) {
      throw new FerryError('INVALID_MANIFEST', `${what}: layer ${i} has diffId ${layer.diffId} but the config says ${String(diffIds[i])}`);
    }
  });
}

/**
 * The store as a copy destination: blobs through the content store's ingestion, each layer
 * unpacked once (skipped when its chainId is present; its compressed blob kept when the source
 * has one, one read feeding both), names last. Holds a lease from the first `prepare` to
 * `commit`, so gc never takes what is being written. One copy at a time: layers stack on their
 * parents.
 */
export class StoreDestination implements ImageDestination {
  readonly name: string;
  readonly maxConcurrency = 1;
  private lease: Lease | undefined;
  private pendingRefs: Array<Omit<RefEntry, 'updated'>> = [];
  private readonly keepBlobs: boolean;
  private readonly shareStacks: boolean;

  constructor(
    private readonly store: Store,
    options: StoreDestinationOptions = {},
  ) {
    this.name = `store ${store.root}`;
    this.keepBlobs = options.keepBlobs ?? true;
    this.shareStacks = options.shareStacks ?? false;
  }

  scopeOf(): string {
    return '';
  }

  async prepare(target: CopyTarget): Promise<void> {
    for (const image of target.images) checkDiffIds(image);
    this.lease ??= await this.store.lease();
    // Space: what is not there yet, as far as the source knows its sizes.
    let needed = 0;
    const counted = new Set<string>();
    for (const image of target.images) {
      const chain = chainIds(image.layers.map((l) => l.diffId));
      for (const [i, layer] of image.layers.entries()) {
        const chainId = chain[i]!;
        if (counted.has(chainId) || (await this.store.layers.has(chainId))) continue;
        counted.add(chainId);
        needed += layer.tarSize ?? layer.descriptor.size * 3;
        if (this.keepBlobs && layer.stored === 'blob') needed += layer.descriptor.size;
      }
    }
    const what = target.ref === undefined ? target.images.map(nameOf).join(', ') : formatReference(target.ref);
    await ensureFreeSpace(this.store.root, needed, `import ${what}`);
  }

  /** Layer stacks are keyed by chainId: one layer on two parents is two stacks. */
  layerKey(_target: CopyTarget, image: Image, index: number): string | undefined {
    return this.shareStacks ? chainIds(image.layers.slice(0, index + 1).map((l) => l.diffId))[index] : undefined;
  }

  hasBlob(_target: CopyTarget, digest: Digest): Promise<boolean> {
    return this.store.blobs.has(digest);
  }

  async putBlob(_target: CopyTarget, descriptor: Pick<Descriptor, 'digest' | 'size'>, open: OpenBytes, options: BlobPutOptions): Promise<BlobPut> {
    if (await this.store.blobs.has(descriptor.digest)) return { written: 0, existed: true };
    const what = `${options.kind} ${descriptor.digest}`;
    const signal = options.signal ? { signal: options.signal } : {};
    const stream = await open(signal);
    // A config or manifest is small: read whole, it is stored in one call (see BlobStore.ingestBytes).
    if (options.kind !== 'layer' && descriptor.size <= SMALL_BLOB) {
      const bytes = await readSmall(stream, descriptor.size, `${what} from the source`);
      return this.putBytes(bytes, descriptor.digest, { what, ...signal });
    }
    const r = await this.store.blobs.ingest(stream, descriptor.digest, descriptor.size, { what, ...signal });
    return { written: r.written, existed: r.existed };
  }

  private async putBytes(bytes: Buffer, digest: Digest, options: { what: string; signal?: AbortSignal }): Promise<BlobPut> {
    const r = await this.store.blobs.ingestBytes(bytes, digest, options);
    return { written: r.written, existed: r.existed };
  }

  async putLayer(_target: CopyTarget, image: Image, index: number, options: PutOptions): Promise<LayerPut> {
    const layer = image.layers[index]!;
    const chain = chainIds(image.layers.slice(0, index + 1).map((l) => l.diffId));
    const chainId = chain[index]!;
    const parent = index === 0 ? undefined : chain[index - 1];
    const layerWhat = `${nameOf(image)} layer ${index} (${layer.descriptor.digest})`;
    const keepBlob = this.keepBlobs && layer.stored === 'blob' && layer.descriptor.digest !== layer.diffId;
    const ingestOptions = { what: `blob of ${layerWhat}`, ...(options.signal ? { signal: options.signal } : {}) };
    const open = options.signal ? { signal: options.signal } : {};
    const out: LayerPut = { descriptor: layer.descriptor, existed: false, written: 0, present: 0 };
    const label = `layer ${shortDigest(layer.diffId)}`;
    const progress = options.onProgress;
    if (await this.store.layers.has(chainId)) {
      out.existed = true;
      out.present += layer.tarSize ?? (await this.store.layers.meta(chainId))?.size ?? 0;
      if (keepBlob && !(await this.store.blobs.has(layer.descriptor.digest))) {
        const r = await this.store.blobs.ingest(await layer.blob(open), layer.descriptor.digest, layer.descriptor.size, ingestOptions);
        out.written += r.written;
      }
      progress?.({ kind: 'done', id: chainId, label, bytes: layer.tarSize ?? 0, skipped: true });
    } else {
      progress?.({ kind: 'start', id: chainId, label, ...(layer.tarSize === undefined ? {} : { total: layer.tarSize }) });
      const unpackOptions = {
        what: layerWhat,
        compressedDigest: layer.descriptor.digest,
        ...(options.onWarning ? { onWarning: options.onWarning } : {}),
        ...(progress ? { onBytes: (bytes: number) => progress({ kind: 'advance', id: chainId, bytes }) } : {}),
      };
      let result: UnpackLayerResult;
      if (keepBlob && !(await this.store.blobs.has(layer.descriptor.digest))) {
        // One read of the blob feeds both the content store and the unpacker.
        const blob = await layer.blob(open);
        const [toStore, toUnpack] = tee(blob);
        const tar = decompressLayer(toUnpack, layer.descriptor.mediaType, layerWhat, layer.descriptor.size);
        const [ingested, unpacked] = await settleBoth(
          this.store.blobs.ingest(toStore, layer.descriptor.digest, layer.descriptor.size, ingestOptions),
          this.store.layers.unpack(tar, layer.diffId, parent, unpackOptions),
          (err) => blob.destroy(err),
        );
        out.written += ingested.written;
        result = unpacked;
      } else {
        result = await this.store.layers.unpack(await layer.tar(open), layer.diffId, parent, unpackOptions);
      }
      if (result.skipped) {
        out.existed = true;
        out.present += result.size;
      } else out.written += result.size;
      progress?.({ kind: 'done', id: chainId, label, bytes: result.size, skipped: result.skipped });
      // Unpacked here: its meta.json names the compressed digest already.
      if (!result.skipped) return out;
    }
    await this.store.layers.addCompressedDigest(chainId, layer.descriptor.digest);
    return out;
  }

  /** The store keeps manifests byte for byte: the source's own, whatever form its layers took here. */
  async putManifest(_target: CopyTarget, image: Image, _layers: readonly LayerPut[], options: PutOptions): Promise<ManifestPut> {
    await this.putBytes(image.rawManifest, image.digest, { what: `manifest ${image.digest}`, ...(options.signal ? { signal: options.signal } : {}) });
    return { digest: image.digest, mediaType: image.mediaType, size: image.rawManifest.length, sourceDigest: image.digest };
  }

  async putIndex(target: CopyTarget, _manifests: readonly ManifestPut[], options: PutOptions): Promise<Digest | undefined> {
    const index = target.index;
    if (index === undefined) return undefined;
    await this.putBytes(index.raw, index.digest, { what: `index ${index.digest}`, ...(options.signal ? { signal: options.signal } : {}) });
    return index.digest;
  }

  /**
   * Names are kept until commit and written in one rewrite of refs.json: one rewrite per image is
   * quadratic in the number of images (a bundle of hundreds).
   */
  async setRef(target: CopyTarget, manifests: readonly ManifestPut[], index: Digest | undefined): Promise<void> {
    if (target.ref === undefined) return;
    const name = formatReference(target.ref);
    for (const [i, image] of target.images.entries()) {
      const m = manifests[i]!;
      this.pendingRefs.push({ name, manifestDigest: m.digest, mediaType: m.mediaType, platform: image.platform, ...(index === undefined ? {} : { indexDigest: index }) });
    }
  }

  async commit(): Promise<void> {
    const refs = this.pendingRefs;
    this.pendingRefs = [];
    try {
      if (refs.length > 0) await this.store.setRefs(refs);
    } finally {
      const lease = this.lease;
      this.lease = undefined;
      await lease?.release();
    }
  }

  /** What was written stays unnamed: gc takes it, a rerun finds it. */
  abort(): Promise<void> {
    return this.commit();
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

/** Blobs other than layers up to this size are read whole and stored in one call. */
const SMALL_BLOB = 4 * 1024 * 1024;

/** Read a small stream whole: exactly `size` bytes (more fails at once); the digest is checked where it is stored. */
async function readSmall(stream: Readable, size: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    total += bytes.length;
    if (total > size) {
      stream.destroy();
      throw new FerryError('SIZE_MISMATCH', `${what}: more than the expected ${size} bytes`);
    }
    chunks.push(bytes);
  }
  if (total !== size) throw new FerryError('SIZE_MISMATCH', `${what}: got ${total} bytes, expected ${size}`);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
}
