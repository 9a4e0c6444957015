import { FerryError } from '../errors.js';
import { digestOf, type Digest } from '../oci/digest.js';
import type { Image, IndexInfo, Layer } from '../oci/image.js';
import { checkLayers, parseManifest } from '../oci/manifest.js';
import { layerMediaTypeFor } from '../oci/media-types.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import { rewriteManifest as rewriteLayers } from '../oci/rewrite-manifest.js';
import { layoutIndex } from '../oci/build-image.js';
import { zstdDecodeMemory } from '../io/zstd.js';
import {
  BLOBS_DIR,
  BUNDLE_FORMAT,
  BUNDLE_FORMAT_VERSION,
  CONTAINERD_NAME_ANNOTATION,
  INDEX_ENTRY,
  OCI_LAYOUT_CONTENT,
  OCI_LAYOUT_ENTRY,
  REF_NAME_ANNOTATION,
  blobEntryName,
  serializeHeader,
  type BlobEncoding,
  type BlobKind,
  type BundleBlob,
  type BundleHeader,
  type BundleImage,
  type BundleImageLayer,
  type BundleIndexRef,
  type BundleRequirement,
  type BundleTool,
  type LayerEncoding,
} from './format.js';
import { isoTime } from '../io/iso-time.js';

/**
 * Plan, then act: from the images and options this computes, without any I/O, the whole table
 * of contents of a bundle: every tar entry in order, with its size and where its bytes come
 * from, and the header. The writer only executes it; the same inputs give the same plan.
 */

export interface PlanSource {
  /** Full normalised reference text, e.g. docker.io/library/redis:7. */
  ref: string;
  image: Image;
  /** The multi-platform index the image was resolved from: carried byte for byte, recorded per image. */
  index?: IndexInfo;
}

export interface PlanOptions {
  layers: LayerEncoding;
  level: number;
  windowLog: number;
  /** Digests (blob digests or diffIds) the target already holds: those layers are left out. */
  exclude: ReadonlySet<string>;
  /** The bundle's creation time: header `created` and every tar mtime. */
  created: Date;
  ferryVersion: string;
  /** Uncompressed tar size by diffId, for raw layers (from Layer.tarSize or a measuring pass). */
  tarSizes: ReadonlyMap<Digest, number>;
  /** Files carried beside the bundle (export --with-ferry), recorded in the header. */
  tools?: readonly BundleTool[];
}

export type PlannedContent =
  | { kind: 'bytes'; bytes: Buffer }
  /** A layer streamed from its source: `form` says whether the tar or the blob is written. */
  | { kind: 'layer'; layer: Layer; form: 'tar' | 'blob'; ref: string };

export type PlannedEntry =
  | { name: string; type: 'directory' }
  | { name: string; type: 'file'; size: number; digest?: Digest; blobKind?: BlobKind; content: PlannedContent };

export interface BundlePlan {
  header: BundleHeader;
  /**
   * The header as written, serialized anew on each read: the plan is held while the bundle
   * streams, and the bytes are 2.5 KB per image (4 MB at 1600 images) needed only at its start.
   */
  readonly headerBytes: Buffer;
  /** The tar mtime of every entry, seconds. */
  mtime: number;
  /** Every entry after ferry-bundle.json and ferry-bundle.sig: the OCI layout, blobs last. */
  entries: PlannedEntry[];
}

function dockerFamily(mediaType: string): boolean {
  return mediaType.startsWith('application/vnd.docker.');
}

function platformOf(p: Platform): Platform {
  const out: Platform = { os: p.os, architecture: p.architecture };
  if (p.variant !== undefined && p.variant !== '') out.variant = p.variant;
  if (p['os.version'] !== undefined && p['os.version'] !== '') out['os.version'] = p['os.version'];
  return out;
}

/** Stable order: by reference, then platform, then manifest digest. */
function compareSources(a: PlanSource, b: PlanSource): number {
  const key = (s: PlanSource): string => `${s.ref}\u0000${formatPlatform(s.image.platform)}\u0000${s.image.digest}`;
  const ka = key(a);
  const kb = key(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function checkImage(source: PlanSource): void {
  const { ref, image } = source;
  const what = `image ${ref} (${formatPlatform(image.platform)})`;
  if (digestOf(image.rawManifest) !== image.digest) {
    throw new FerryError('DIGEST_MISMATCH', `${what}: manifest bytes do not hash to ${image.digest}`);
  }
  if (digestOf(image.rawConfig) !== image.configDigest) {
    throw new FerryError('DIGEST_MISMATCH', `${what}: config bytes do not hash to ${image.configDigest}`);
  }
  checkLayers(image.manifest, what);
  const diffIds = image.config.rootfs.diff_ids;
  if (diffIds.length !== image.layers.length) {
    throw new FerryError('INVALID_MANIFEST', `${what}: ${image.layers.length} layers but ${diffIds.length} diff_ids in the config`);
  }
  image.layers.forEach((layer, i) => {
    if (layer.diffId !== diffIds[i]) {
      throw new FerryError('INVALID_MANIFEST', `${what}: layer ${i} has diffId ${layer.diffId}, the config says ${String(diffIds[i])}`);
    }
  });
}

/**
 * The index to record for an image: the source's, checked (its bytes hash to its digest, it is an
 * index), and only when it lists the image's manifest: an image written anew (new digest) from
 * the store is no longer the one its index names.
 */
function indexOf(source: PlanSource): IndexInfo | undefined {
  const { ref, image, index } = source;
  if (index === undefined) return undefined;
  const what = `index ${index.digest} of ${ref}`;
  if (digestOf(index.raw) !== index.digest) throw new FerryError('DIGEST_MISMATCH', `${what}: its bytes do not hash to its digest`);
  const parsed = parseManifest(index.raw, index.mediaType, what);
  if (parsed.kind !== 'index') throw new FerryError('INVALID_MANIFEST', `${what}: not an index (${index.mediaType})`);
  return parsed.manifest.manifests.some((d) => d.digest === image.digest) ? { digest: index.digest, mediaType: parsed.mediaType, raw: index.raw } : undefined;
}

/** The manifest the layout points at in raw mode: same JSON, layers replaced by their raw tars. */
export function rewriteManifest(image: Image, tarSizes: ReadonlyMap<Digest, number>, ref: string): Buffer {
  return rewrittenWith(image, tarSizesOf(image, tarSizes, ref), ref);
}

/** The raw tar size of each of the image's layers, in order. */
function tarSizesOf(image: Image, tarSizes: ReadonlyMap<Digest, number>, ref: string): number[] {
  return image.layers.map((layer) => {
    const size = tarSizes.get(layer.diffId);
    if (size === undefined) throw new FerryError('BUNDLE_INVALID', `plan bundle: image ${ref}: no tar size for layer ${layer.diffId}`);
    return size;
  });
}

function rewrittenWith(image: Image, sizes: readonly number[], ref: string): Buffer {
  const layers = image.layers.map((layer, i) => ({ digest: layer.diffId, size: sizes[i]!, compression: 'none' as const }));
  return rewriteLayers(image.rawManifest, image.mediaType, layers, `manifest of ${ref}`).raw;
}

/**
 * A rewritten manifest's bytes, made again when the bundle writes them and checked against the
 * planned digest: a plan held every image's (0.9 MB at 1600 images) while the bundle streamed.
 */
class RewrittenManifest {
  readonly kind = 'bytes';

  constructor(
    private readonly image: Image,
    private readonly sizes: readonly number[],
    private readonly ref: string,
    private readonly digest: Digest,
  ) {}

  get bytes(): Buffer {
    const bytes = rewrittenWith(this.image, this.sizes, this.ref);
    const digest = digestOf(bytes);
    if (digest !== this.digest) {
      throw new FerryError('DIGEST_MISMATCH', `write bundle: the manifest of ${this.ref} was rewritten as ${digest}, planned as ${this.digest}`, {
        hint: 'the image changed while the bundle was written; export again',
      });
    }
    return bytes;
  }
}

/** Compute the bundle plan. Pure: the same sources and options give the same plan and bytes. */
export function planBundle(sources: readonly PlanSource[], options: PlanOptions): BundlePlan {
  if (sources.length === 0) throw new FerryError('USAGE', 'plan bundle: no images to write');
  // De-duplicate identical sources; the same name and platform twice with different content is ambiguous.
  const byKey = new Map<string, PlanSource>();
  for (const s of sources) {
    const key = `${s.ref}\u0000${formatPlatform(s.image.platform)}`;
    const seen = byKey.get(key);
    if (seen !== undefined && seen.image.digest !== s.image.digest) {
      throw new FerryError('USAGE', `plan bundle: ${s.ref} (${formatPlatform(s.image.platform)}) is given twice with different manifests (${seen.image.digest}, ${s.image.digest})`);
    }
    // The same image given with and without its index (two requests for one name): keep the index.
    if (seen === undefined || (seen.index === undefined && s.index !== undefined)) byKey.set(key, s);
  }
  const ordered = [...byKey.values()].sort(compareSources);
  ordered.forEach(checkImage);

  const raw = options.layers === 'raw';
  const blobs = new Map<Digest, BlobEntry>();
  const pulled = new Map<Digest, number>();
  const addBlob = (digest: Digest, size: number, mediaType: string, kind: BlobKind, encoding: BlobEncoding, content: PlannedContent): void => {
    if (!blobs.has(digest)) blobs.set(digest, new BlobEntry(digest, size, mediaType, kind, encoding, content));
  };

  // Records the same for many images are one object in the header (a shared base layer's, a
  // platform): the header is held while the bundle streams. JSON writes each one where it is used.
  const platforms = new Map<string, Platform>();
  const layerRecords = new Map<string, BundleImageLayer>();
  const layerRecord = (layer: Layer): BundleImageLayer => {
    const { digest, size, mediaType } = layer.descriptor;
    const key = `${digest} ${layer.diffId} ${size} ${mediaType}`;
    let entry = layerRecords.get(key);
    if (entry === undefined) {
      entry = { digest, size, mediaType, diffId: layer.diffId, blob: raw ? layer.diffId : digest };
      if (raw) entry.tarSize = options.tarSizes.get(layer.diffId)!;
      layerRecords.set(key, entry);
    }
    return entry;
  };

  // Manifests and configs first: small, and what a reader needs before the layers. An image's
  // index goes just before the first image that names it.
  const images: BundleImage[] = [];
  for (const source of ordered) {
    const { ref, image } = source;
    const index = indexOf(source);
    if (index !== undefined) {
      pulled.set(index.digest, index.raw.length);
      addBlob(index.digest, index.raw.length, index.mediaType, 'manifest', 'as-pulled', { kind: 'bytes', bytes: index.raw });
    }
    pulled.set(image.digest, image.rawManifest.length);
    pulled.set(image.configDigest, image.rawConfig.length);
    addBlob(image.digest, image.rawManifest.length, image.mediaType, 'manifest', 'as-pulled', { kind: 'bytes', bytes: image.rawManifest });
    let layoutManifest = image.rawManifest;
    let layoutDigest = image.digest;
    if (raw) {
      const sizes = tarSizesOf(image, options.tarSizes, ref);
      layoutManifest = rewrittenWith(image, sizes, ref);
      layoutDigest = digestOf(layoutManifest);
      addBlob(layoutDigest, layoutManifest.length, image.mediaType, 'manifest', 'rewritten', new RewrittenManifest(image, sizes, ref, layoutDigest));
    }
    addBlob(image.configDigest, image.rawConfig.length, image.manifest.config.mediaType, 'config', 'as-pulled', { kind: 'bytes', bytes: image.rawConfig });
    const written = platformOf(image.platform);
    const platformKey = JSON.stringify(written);
    if (!platforms.has(platformKey)) platforms.set(platformKey, written);
    const platform = platforms.get(platformKey)!;
    images.push({
      ref,
      platform,
      manifestDigest: image.digest,
      manifestMediaType: image.mediaType,
      manifestSize: image.rawManifest.length,
      configDigest: image.configDigest,
      configSize: image.rawConfig.length,
      layoutManifestDigest: layoutDigest,
      layoutManifestSize: layoutManifest.length,
      layers: image.layers.map(layerRecord),
      size: image.rawManifest.length + image.rawConfig.length + image.layers.reduce((s, l) => s + l.descriptor.size, 0),
      ...(index === undefined ? {} : { index: { digest: index.digest, mediaType: index.mediaType, size: index.raw.length } satisfies BundleIndexRef }),
    });
  }

  // Layers by depth: every image's layer 0, then every layer 1, ...: related layers sit close
  // together, so a bounded zstd window still sees the redundancy between them.
  const requires = new Map<Digest, BundleRequirement>();
  const depth = Math.max(0, ...ordered.map((s) => s.image.layers.length));
  for (let d = 0; d < depth; d++) {
    for (const { ref, image } of ordered) {
      const layer = image.layers[d];
      if (layer === undefined) continue;
      pulled.set(layer.descriptor.digest, layer.descriptor.size);
      const blobDigest = raw ? layer.diffId : layer.descriptor.digest;
      const excluded = raw
        ? options.exclude.has(layer.diffId) || options.exclude.has(layer.descriptor.digest)
        : options.exclude.has(layer.descriptor.digest);
      if (excluded) {
        if (!blobs.has(blobDigest) && !requires.has(blobDigest)) {
          requires.set(blobDigest, { digest: layer.descriptor.digest, diffId: layer.diffId, size: layer.descriptor.size, mediaType: layer.descriptor.mediaType });
        }
        continue;
      }
      if (raw) {
        const size = options.tarSizes.get(layer.diffId)!;
        addBlob(layer.diffId, size, layerMediaTypeFor('none', dockerFamily(layer.descriptor.mediaType)), 'layer', 'raw', { kind: 'layer', layer, form: 'tar', ref });
      } else {
        addBlob(layer.descriptor.digest, layer.descriptor.size, layer.descriptor.mediaType, 'layer', 'as-pulled', { kind: 'layer', layer, form: 'blob', ref });
      }
    }
  }

  // A diffId reached both by an excluded and by a kept compressed blob travels anyway.
  for (const d of blobs.keys()) requires.delete(d);
  const blobList = [...blobs.values()];
  // The header's blob records are the entries themselves: their own fields are the record's.
  const headerBlobs: BundleBlob[] = blobList;
  const requireList = [...requires.values()];
  const header: BundleHeader = {
    format: BUNDLE_FORMAT,
    formatVersion: BUNDLE_FORMAT_VERSION,
    ferryVersion: options.ferryVersion,
    created: isoTime(options.created),
    layers: options.layers,
    compression: {
      algorithm: 'zstd',
      level: options.level,
      windowLog: options.windowLog,
      longDistanceMatching: true,
      decodeMemory: zstdDecodeMemory(options.windowLog),
    },
    images,
    blobs: headerBlobs,
    requires: requireList,
    totals: {
      images: images.length,
      blobs: headerBlobs.length,
      blobBytes: headerBlobs.reduce((s, b) => s + b.size, 0),
      layerBytes: headerBlobs.filter((b) => b.kind === 'layer').reduce((s, b) => s + b.size, 0),
      pulledBytes: [...pulled.values()].reduce((s, n) => s + n, 0),
      requires: requireList.length,
      requiredBytes: requireList.reduce((s, r) => s + r.size, 0),
    },
    ...(options.tools !== undefined && options.tools.length > 0 ? { tools: [...options.tools] } : {}),
  };

  const indexBytes = layoutIndex(
    images.map((img) => ({
      mediaType: img.manifestMediaType,
      digest: img.layoutManifestDigest,
      size: img.layoutManifestSize,
      platform: img.platform,
      annotations: { [REF_NAME_ANNOTATION]: img.ref, [CONTAINERD_NAME_ANNOTATION]: img.ref },
    })),
    { trailingNewline: true },
  );
  const layoutBytes = Buffer.from(OCI_LAYOUT_CONTENT, 'utf8');
  const entries: PlannedEntry[] = [
    { name: OCI_LAYOUT_ENTRY, type: 'file', size: layoutBytes.length, content: { kind: 'bytes', bytes: layoutBytes } },
    { name: INDEX_ENTRY, type: 'file', size: indexBytes.length, content: { kind: 'bytes', bytes: indexBytes } },
    { name: BLOBS_DIR, type: 'directory' },
  ];
  const algorithms = [...new Set(blobList.map((b) => b.digest.slice(0, b.digest.indexOf(':'))))].sort();
  for (const a of algorithms) entries.push({ name: `${BLOBS_DIR}${a}/`, type: 'directory' });
  for (const blob of blobList) entries.push(blob);
  return planOf(header, Math.floor(options.created.getTime() / 1000), entries);
}

/**
 * A blob's tar entry and its record in the header, one object (they were two, and 8,000 of each
 * at 1600 images, held while the bundle streams). Its own fields are the header record's, in its
 * order, and all JSON.stringify writes; the entry's are getters, its content a private field, and
 * its name made when written.
 */
class BlobEntry implements BundleBlob {
  readonly #content: PlannedContent;

  constructor(
    readonly digest: Digest,
    readonly size: number,
    readonly mediaType: string,
    readonly kind: BlobKind,
    readonly encoding: BlobEncoding,
    content: PlannedContent,
  ) {
    this.#content = content;
  }

  get type(): 'file' {
    return 'file';
  }

  get name(): string {
    return blobEntryName(this.digest);
  }

  get blobKind(): BlobKind {
    return this.kind;
  }

  get content(): PlannedContent {
    return this.#content;
  }
}

/**
 * The plan as returned, made outside planBundle: a getter made there would keep planBundle's
 * scope (its blob table and pulled sizes, per blob) alive as long as the plan.
 */
function planOf(header: BundleHeader, mtime: number, entries: PlannedEntry[]): BundlePlan {
  return {
    header,
    get headerBytes(): Buffer {
      return serializeHeader(header);
    },
    mtime,
    entries,
  };
}
