import { Readable } from 'node:stream';
import { FerryError, isFerryError } from '../errors.js';
import { CopyProgress } from '../io/copy-progress.js';
import { compress, type PushCompression } from '../io/layer-compress.js';
import type { BlobPut, BlobPutOptions, CopyTarget, ImageDestination, LayerPut, ManifestPut, OpenBytes, PutOptions } from '../oci/destination.js';
import type { Descriptor } from '../oci/descriptor.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import { holdsCompressedBlob, type Image, type Layer, type OpenOptions } from '../oci/image.js';
import { parseManifest } from '../oci/manifest.js';
import { layerCompression, layerMediaTypeFor, MediaType } from '../oci/media-types.js';
import { platformMatches } from '../oci/platform.js';
import { formatReference, withDigest, type Reference } from '../oci/reference.js';
import { buildIndex, indexIsComplete, rewriteManifest } from '../oci/rewrite-manifest.js';
import type { PushBlobResult, RegistryClient, Repository } from './client.js';

/** Compressed forms of tar-only layers, made once and kept (the store's compressed-layer cache). */
export interface CompressedForms {
  ensure(layer: Layer, compression: PushCompression, options: OpenOptions): Promise<{ digest: Digest; size: number; open(): Readable }>;
}

export interface RegistryDestinationOptions {
  /** For layers held only as a tar (default gzip: every engine reads it). */
  compression?: PushCompression;
  forms?: CompressedForms;
  /**
   * Learn, from the manifests an earlier push left under each target's tag, the compressed form of
   * tar-only layers: a second push of the same raw bundle then compresses and sends nothing (as
   * docker's layer digest cache does).
   */
  reuseEarlier?: boolean;
  /** Repositories of the target registry to try mounting blobs from, besides those the copy knows. */
  mountFrom?: readonly string[];
  /** Push blobs larger than this in PATCH chunks (overrides the client's chunkSize). */
  chunkSize?: number;
  /** Told about each blob as it is settled: present, mounted, or uploaded. */
  onBlob?: (digest: Digest, result: PushBlobResult) => void;
}

interface Compressed {
  digest: Digest;
  size: number;
  open: (signal?: AbortSignal) => Promise<Readable>;
}

function repoOf(target: CopyTarget): Repository {
  if (target.ref === undefined) throw new FerryError('USAGE', 'push: the destination names no repository');
  return { registry: target.ref.registry, repository: target.ref.repository };
}

function nameOf(image: Image): string {
  return image.ref === undefined ? image.digest : formatReference(image.ref);
}

/**
 * A registry repository as a copy destination: blobs it has are skipped, blobs another repository
 * of the copy holds are mounted, layers held only as tars go compressed (from the cache of
 * compressed forms, else while they stream, the digest known at the end) and their image then
 * gets a new manifest. Several images of one name go up by digest, then an index under the tag:
 * the source's byte for byte when nothing in it changed.
 */
export class RegistryDestination implements ImageDestination {
  readonly name: string;
  readonly maxConcurrency = Number.POSITIVE_INFINITY;
  private readonly compression: PushCompression;
  /** diffId -> its compressed form, made once per copy (compression is deterministic: a retry or another repository gets the same bytes). */
  private readonly compressed = new Map<string, Promise<Compressed>>();
  /** scope + diffId -> the compressed blob an earlier push of this layer left in that repository. */
  private readonly earlier = new Map<string, { digest: Digest; size: number }>();

  constructor(
    private readonly client: RegistryClient,
    private readonly options: RegistryDestinationOptions = {},
  ) {
    this.name = 'registry';
    this.compression = options.compression ?? 'gzip';
  }

  scopeOf(target: CopyTarget): string {
    const repo = repoOf(target);
    return `${repo.registry}/${repo.repository}`;
  }

  layerKey(target: CopyTarget, image: Image, index: number): string {
    return `${this.scopeOf(target)} ${image.layers[index]!.descriptor.digest}`;
  }

  /** Several images, or the source's whole index: by digest, and an index under the tag. */
  private multi(target: CopyTarget): boolean {
    const what = `index of ${target.ref === undefined ? '' : formatReference(target.ref)}`;
    const sources = target.images.map((i) => target.originalDigests?.get(i.digest) ?? i.digest);
    return target.images.length > 1 || (target.index !== undefined && indexIsComplete(target.index, sources, what));
  }

  async prepare(target: CopyTarget, options: PutOptions): Promise<void> {
    repoOf(target);
    if (target.images.length === 0) throw new FerryError('NOT_FOUND', `push ${formatReference(target.ref!)}: no images to push`);
    if (this.options.reuseEarlier === true) await this.learnEarlier(target, options);
  }

  /** See RegistryDestinationOptions.reuseEarlier: manifests under the tag whose config is one of ours. */
  private async learnEarlier(target: CopyTarget, options: PutOptions): Promise<void> {
    const ref = target.ref!;
    if (ref.tag === undefined || !target.images.some((i) => i.layers.some((l) => !holdsCompressedBlob(l)))) return;
    const call = options.signal ? { signal: options.signal } : {};
    const what = `manifest of ${formatReference(ref)} (an earlier push)`;
    let top: { raw: Buffer; mediaType: string };
    try {
      top = await this.client.getManifest(ref, call);
    } catch (err) {
      if (isFerryError(err, 'NOT_FOUND')) return; // never pushed: nothing to reuse
      throw err;
    }
    const manifests: Buffer[] = [];
    const parsed = parseManifest(top.raw, top.mediaType, what);
    if (parsed.kind === 'image') manifests.push(top.raw);
    else {
      for (const entry of parsed.manifest.manifests) {
        if (entry.platform === undefined || !target.images.some((image) => platformMatches(image.platform, entry.platform!))) continue;
        manifests.push((await this.client.getManifest(withDigest(repoOf(target), entry.digest), call)).raw);
      }
    }
    const scope = this.scopeOf(target);
    for (const raw of manifests) {
      const m = parseManifest(raw, undefined, what);
      if (m.kind !== 'image') continue;
      const image = target.images.find((i) => i.configDigest === m.manifest.config.digest && i.layers.length === m.manifest.layers.length);
      if (image === undefined) continue;
      for (const [i, layer] of image.layers.entries()) {
        const d = m.manifest.layers[i]!;
        if (!holdsCompressedBlob(layer) && layerCompression(d.mediaType) === this.compression) this.earlier.set(`${scope} ${layer.diffId}`, { digest: d.digest, size: d.size });
      }
    }
  }

  async hasBlob(target: CopyTarget, digest: Digest, options: PutOptions): Promise<boolean> {
    return (await this.client.headBlob(repoOf(target), digest, { ...(options.signal ? { signal: options.signal } : {}), push: true })) !== undefined;
  }

  private async push(target: CopyTarget, kind: string, blob: { digest: Digest; size: number }, open: (signal?: AbortSignal) => Promise<Readable>, options: PutOptions): Promise<PushBlobResult> {
    const repo = repoOf(target);
    const progress = new CopyProgress(options.onProgress, `${kind}:${blob.digest}:${repo.registry}/${repo.repository}`, `push ${kind} ${shortDigest(blob.digest)} to ${repo.repository}`, blob.size);
    const prefix = `${repo.registry}/`;
    const known = (options.knownAt?.(blob.digest) ?? []).filter((s) => s.startsWith(prefix)).map((s) => s.slice(prefix.length));
    const mountFrom = [...(this.options.mountFrom ?? []), ...known];
    const result = await this.client.pushBlob(repo, blob, progress.wrap(open), {
      ...(options.signal ? { signal: options.signal } : {}),
      mountFrom,
      ...(this.options.chunkSize !== undefined ? { chunkSize: this.options.chunkSize } : {}),
    });
    progress.settle(result, blob.size);
    this.options.onBlob?.(blob.digest, result);
    return result;
  }

  async putBlob(target: CopyTarget, descriptor: { digest: Digest; size: number }, open: OpenBytes, options: BlobPutOptions): Promise<BlobPut> {
    const r = await this.push(target, options.kind, descriptor, (signal) => open(signal ? { signal } : {}), options);
    return { written: r === 'uploaded' ? descriptor.size : 0, existed: r === 'exists', mounted: r === 'mounted' };
  }

  async putLayer(target: CopyTarget, image: Image, index: number, options: PutOptions): Promise<LayerPut> {
    const layer = image.layers[index]!;
    if (holdsCompressedBlob(layer)) {
      const { digest, size } = layer.descriptor;
      const r = await this.push(target, 'layer', { digest, size }, (signal) => layer.blob(signal ? { signal } : {}), options);
      return { descriptor: layer.descriptor, existed: r === 'exists', mounted: r === 'mounted', written: r === 'uploaded' ? size : 0, present: r === 'exists' ? size : 0 };
    }
    const docker = image.mediaType === MediaType.dockerManifest || image.mediaType === MediaType.dockerManifestList;
    const mediaType = layerMediaTypeFor(this.compression, docker && this.compression === 'gzip');
    const known = this.earlier.get(`${this.scopeOf(target)} ${layer.diffId}`);
    if (known !== undefined && (await this.hasBlob(target, known.digest, options))) {
      return { descriptor: { mediaType, ...known }, existed: true, written: 0, present: known.size };
    }
    let job = this.compressed.get(layer.diffId);
    if (job === undefined) {
      const forms = this.options.forms;
      if (forms === undefined) {
        // Compressed while it streams to this repository, the digest known at the end.
        const repo = repoOf(target);
        const open = async (signal?: AbortSignal): Promise<Readable> => compress(await layer.tar(signal ? { signal } : {}), this.compression);
        const progress = new CopyProgress(options.onProgress, `layer:${layer.diffId}:${repo.registry}/${repo.repository}`, `push layer ${shortDigest(layer.diffId)} to ${repo.repository}`, undefined);
        const streamed = this.client.pushBlobStream(repo, progress.wrap(open), options.signal ? { signal: options.signal } : {}).then((r) => {
          progress.settle(r.result, r.size);
          this.options.onBlob?.(r.digest, r.result);
          return { digest: r.digest, size: r.size, open, streamed: r };
        });
        this.compressed.set(layer.diffId, streamed);
        const r = await streamed;
        const descriptor: Descriptor = { mediaType, digest: r.digest, size: r.size };
        return { descriptor, existed: r.streamed.result === 'exists', written: r.streamed.result === 'uploaded' ? r.size : 0, present: r.streamed.result === 'exists' ? r.size : 0 };
      }
      job = forms.ensure(layer, this.compression, options.signal ? { signal: options.signal } : {}).then((c) => ({ digest: c.digest, size: c.size, open: async () => c.open() }));
      this.compressed.set(layer.diffId, job);
    }
    const c = await job;
    const r = await this.push(target, 'layer', { digest: c.digest, size: c.size }, c.open, options);
    return { descriptor: { mediaType, digest: c.digest, size: c.size }, existed: r === 'exists', mounted: r === 'mounted', written: r === 'uploaded' ? c.size : 0, present: r === 'exists' ? c.size : 0 };
  }

  async putManifest(target: CopyTarget, image: Image, layers: readonly LayerPut[], options: PutOptions): Promise<ManifestPut> {
    const ref = target.ref!;
    const repo = repoOf(target);
    const replacements = layers.map((l, i) => (l.descriptor.digest === image.layers[i]!.descriptor.digest ? undefined : { digest: l.descriptor.digest, size: l.descriptor.size, compression: this.compression }));
    const manifest = replacements.some((r) => r !== undefined)
      ? rewriteManifest(image.rawManifest, image.mediaType, replacements, `manifest of ${nameOf(image)}`)
      : { raw: image.rawManifest, mediaType: image.mediaType, digest: image.digest };
    const byDigest = this.multi(target);
    if (!byDigest && ref.tag === undefined && ref.digest !== undefined && ref.digest !== manifest.digest) {
      throw new FerryError('DIGEST_MISMATCH', `push ${formatReference(ref)}: the image's manifest is ${manifest.digest}`, { hint: 'name the destination by tag' });
    }
    const put: Reference = byDigest || ref.tag === undefined ? withDigest(repo, manifest.digest) : { ...repo, tag: ref.tag };
    await this.client.putManifest(put, manifest.raw, manifest.mediaType, options.signal ? { signal: options.signal } : {});
    return { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.raw.length, sourceDigest: target.originalDigests?.get(image.digest) ?? image.digest };
  }

  async putIndex(target: CopyTarget, manifests: readonly ManifestPut[], options: PutOptions): Promise<Digest | undefined> {
    if (!this.multi(target)) return undefined;
    const ref = target.ref!;
    const repo = repoOf(target);
    const children = manifests.map((m, i) => ({ sourceDigest: m.sourceDigest, digest: m.digest, size: m.size, mediaType: m.mediaType, platform: target.images[i]!.platform }));
    const index = buildIndex(children, target.index, `index of ${formatReference(ref)}`);
    const put: Reference = ref.tag !== undefined ? { ...repo, tag: ref.tag } : withDigest(repo, index.digest);
    await this.client.putManifest(put, index.raw, index.mediaType, options.signal ? { signal: options.signal } : {});
    return index.digest;
  }

  /** Tags were set by the manifest and index puts. */
  async setRef(): Promise<void> {}

  async commit(): Promise<void> {}

  /** Blobs already uploaded stay: unreferenced, the registry's gc takes them; a rerun finds them. */
  async abort(): Promise<void> {}
}
