import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { FerryError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Image, IndexInfo, Layer } from '../oci/image.js';
import { formatReference, withDigest, type Reference } from '../oci/reference.js';
import type { Platform } from '../oci/platform.js';
import type { ProgressListener } from '../io/progress.js';
import type { CompressedLayerCache } from './compressed-cache.js';
import { holdsCompressedBlob } from './compressed-image.js';
import { buildIndex, indexIsComplete, rewriteManifest, type IndexChild } from './rewrite-manifest.js';
import { BlobProgress, compress, repoText, type BlobSize, type OpenBlob, type PushCompression, type PushTarget, type Repository } from './push-target.js';

/**
 * Push `Image`s (from the store, an archive, a layout: any location) to a registry. Blobs the
 * repository has are skipped, blobs another repository of the same push holds are mounted, the
 * rest upload concurrently. A layer held only as a tar is compressed (gzip, or zstd) on the way,
 * or taken from a cache of compressed forms; its image then gets a new manifest, and the result
 * names both digests. Several platforms of one name go up as an index.
 */
export interface PushRequest {
  /** Repository and tag (or digest only) to push to. */
  target: Reference;
  /** One image, or one per platform. */
  images: readonly Image[];
  /** The index the images came from, pushed byte for byte when nothing in it changed (one image of a partial index goes up as itself). */
  index?: IndexInfo;
  /** Images already made anew from the source's (see replaceLayers): their digest -> the source's. */
  sourceDigests?: ReadonlyMap<string, Digest>;
}

export interface PushImagesOptions {
  compression?: PushCompression;
  /** Compressed forms of tar-only layers, made once and reused (the store's cache). */
  cache?: CompressedLayerCache;
  /** Blobs in flight at once (default 4). */
  jobs?: number;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
}

export interface PushedImage {
  platform: Platform;
  /** The manifest digest in the source. */
  sourceDigest: Digest;
  /** The manifest digest pushed: the same unless layers were compressed. */
  digest: Digest;
  rewritten: boolean;
}

export interface PushResult {
  /** Full reference pushed, with its tag. */
  target: string;
  /** What the tag points at: the manifest, or the index. */
  digest: Digest;
  images: PushedImage[];
  index?: { sourceDigest: Digest | undefined; digest: Digest; rewritten: boolean };
  /** Blobs uploaded / found present / mounted, over this request. */
  uploaded: number;
  present: number;
  mounted: number;
}

interface Counts {
  uploaded: number;
  present: number;
  mounted: number;
}


export class ImagePusher {
  private readonly limit: ReturnType<typeof pLimit>;
  private readonly compression: PushCompression;
  /** repo + digest -> the push of that blob there (so two images sharing a layer push it once). */
  private readonly blobJobs = new Map<string, Promise<void>>();
  /** digest -> repositories (of the target registry) known to hold it: mount sources. */
  private readonly homes = new Map<string, Set<string>>();
  /** diffId -> its compressed form, made once per push. */
  private readonly compressed = new Map<string, Promise<BlobSize & { open: OpenBlob }>>();

  constructor(
    private readonly target: PushTarget,
    private readonly options: PushImagesOptions = {},
  ) {
    this.limit = pLimit(options.jobs ?? 4);
    this.compression = options.compression ?? 'gzip';
  }

  /** Aborted on the first failure, so the other uploads of the push stop too. */
  private readonly controller = new AbortController();

  private signal(): { signal: AbortSignal } {
    return { signal: this.options.signal ? AbortSignal.any([this.options.signal, this.controller.signal]) : this.controller.signal };
  }

  private home(digest: Digest, repo: Repository): void {
    let set = this.homes.get(digest);
    if (set === undefined) {
      set = new Set();
      this.homes.set(digest, set);
    }
    set.add(repo.repository);
  }

  /** Push a blob of known digest to `repo` once per push, mounting from a repository that has it. */
  private pushKnown(repo: Repository, kind: string, blob: BlobSize, open: OpenBlob, counts: Counts): Promise<void> {
    const key = `${repoText(repo)} ${blob.digest}`;
    let job = this.blobJobs.get(key);
    if (job === undefined) {
      job = this.limit(async () => {
        const progress = new BlobProgress(this.options.onProgress, kind, blob.digest, repo, blob.size);
        const mountFrom = [...(this.homes.get(blob.digest) ?? [])].filter((r) => r !== repo.repository);
        const result = await this.target.pushBlob(repo, blob, progress.wrap(open), { ...this.signal(), mountFrom });
        progress.settle(result, blob.size);
        counts[result === 'uploaded' ? 'uploaded' : result === 'mounted' ? 'mounted' : 'present']++;
        this.home(blob.digest, repo);
      });
      this.blobJobs.set(key, job);
    }
    return job;
  }

  /**
   * The compressed form of a tar-only layer: from the cache (made there once), else compressed
   * while it streams to `repo`, the digest known at the end. Compression is deterministic, so a
   * retry or a second repository compresses again to the same bytes.
   */
  private async compressedLayer(repo: Repository, layer: Layer, counts: Counts): Promise<BlobSize> {
    const cache = this.options.cache;
    let job = this.compressed.get(layer.diffId);
    let streamedHere = false;
    if (job === undefined) {
      if (cache !== undefined) {
        job = this.limit(() => cache.ensure(layer, this.compression, this.signal())).then((c) => ({ digest: c.digest, size: c.size, open: async () => c.open() }));
      } else {
        streamedHere = true;
        const open: OpenBlob = async (signal) => compress(await layer.tar(signal ? { signal } : {}), this.compression);
        job = this.limit(async () => {
          const progress = new BlobProgress(this.options.onProgress, 'layer', layer.diffId, repo, undefined);
          const r = await this.target.pushBlobStream(repo, progress.wrap(open), this.signal());
          progress.settle(r.result, r.size);
          counts[r.result === 'uploaded' ? 'uploaded' : 'present']++;
          this.home(r.digest, repo);
          this.blobJobs.set(`${repoText(repo)} ${r.digest}`, Promise.resolve());
          return { digest: r.digest, size: r.size, open };
        });
      }
      this.compressed.set(layer.diffId, job);
    }
    const c = await job;
    if (!streamedHere) await this.pushKnown(repo, 'layer', { digest: c.digest, size: c.size }, c.open, counts);
    return { digest: c.digest, size: c.size };
  }

  /** Push one image's blobs and its manifest (by digest when `byDigest`, else under the target's tag). */
  async pushImage(target: Reference, image: Image, byDigest: boolean, counts: Counts, sourceDigest: Digest = image.digest): Promise<PushedImage & { mediaType: string; size: number }> {
    const repo: Repository = { registry: target.registry, repository: target.repository };
    const name = image.ref ? formatReference(image.ref) : image.digest;
    const layerResults = await Promise.all(
      image.layers.map(async (layer) => {
        if (holdsCompressedBlob(layer)) {
          await this.pushKnown(repo, 'layer', { digest: layer.descriptor.digest, size: layer.descriptor.size }, (signal) => layer.blob(signal ? { signal } : {}), counts);
          return undefined;
        }
        const d = await this.compressedLayer(repo, layer, counts);
        return { digest: d.digest, size: d.size, compression: this.compression };
      }),
    );
    const rawConfig = image.rawConfig;
    await this.pushKnown(repo, 'config', { digest: image.configDigest, size: rawConfig.length }, async () => Readable.from([rawConfig]), counts);
    const rewritten = layerResults.some((r) => r !== undefined);
    const manifest = rewritten
      ? rewriteManifest(image.rawManifest, image.mediaType, layerResults, `manifest of ${name}`)
      : { raw: image.rawManifest, mediaType: image.mediaType, digest: image.digest };
    if (!byDigest && target.tag === undefined && target.digest !== undefined && target.digest !== manifest.digest) {
      throw new FerryError('DIGEST_MISMATCH', `push ${formatReference(target)}: the image's manifest is ${manifest.digest}`, { hint: 'name the destination by tag' });
    }
    const ref: Reference = byDigest || target.tag === undefined ? withDigest(repo, manifest.digest) : { ...repo, tag: target.tag };
    await this.target.putManifest(ref, manifest.raw, manifest.mediaType, this.signal());
    this.home(manifest.digest, repo);
    return { platform: image.platform, sourceDigest, digest: manifest.digest, rewritten: manifest.digest !== sourceDigest, mediaType: manifest.mediaType, size: manifest.raw.length };
  }

  /** Push one request: its images, then (for several platforms) the index under the tag. */
  async push(request: PushRequest): Promise<PushResult> {
    const { target, images } = request;
    if (images.length === 0) throw new FerryError('NOT_FOUND', `push ${formatReference(target)}: no images to push`);
    const counts: Counts = { uploaded: 0, present: 0, mounted: 0 };
    const what = `index of ${formatReference(target)}`;
    const multi = images.length > 1 || (request.index !== undefined && indexIsComplete(request.index, images.map((i) => request.sourceDigests?.get(i.digest) ?? i.digest), what));
    const jobs = images.map((image) => this.pushImage(target, image, multi, counts, request.sourceDigests?.get(image.digest)));
    let pushed: Awaited<(typeof jobs)[number]>[];
    try {
      pushed = await Promise.all(jobs);
    } catch (err) {
      this.controller.abort(err);
      await Promise.allSettled(jobs);
      throw err;
    }
    const result: PushResult = {
      target: formatReference(target),
      digest: pushed[0]!.digest,
      images: pushed.map(({ platform, sourceDigest, digest, rewritten }) => ({ platform, sourceDigest, digest, rewritten })),
      ...counts,
    };
    if (multi) {
      const children: IndexChild[] = pushed.map((p) => ({ sourceDigest: p.sourceDigest, digest: p.digest, size: p.size, mediaType: p.mediaType, platform: p.platform }));
      const index = buildIndex(children, request.index, what);
      const ref: Reference = target.tag !== undefined ? { registry: target.registry, repository: target.repository, tag: target.tag } : withDigest(target, index.digest);
      await this.target.putManifest(ref, index.raw, index.mediaType, this.signal());
      result.digest = index.digest;
      result.index = { sourceDigest: request.index?.digest, digest: index.digest, rewritten: index.digest !== request.index?.digest };
    }
    Object.assign(result, counts);
    return result;
  }
}

/** Push every request (in order, their blobs concurrently); shared blobs go up once and are mounted elsewhere. */
export async function pushImages(target: PushTarget, requests: readonly PushRequest[], options: PushImagesOptions = {}): Promise<PushResult[]> {
  const pusher = new ImagePusher(target, options);
  const out: PushResult[] = [];
  for (const request of requests) out.push(await pusher.push(request));
  return out;
}
