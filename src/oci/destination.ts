import type { Readable } from 'node:stream';
import type { Descriptor } from './descriptor.js';
import type { Digest } from './digest.js';
import type { Image, IndexInfo, OpenOptions } from './image.js';
import type { Reference } from './reference.js';
import type { ProgressListener } from './progress-event.js';

/**
 * The other half of the architecture: every place images can be written to (the store, a
 * registry, a docker-archive, a bundle) implements this in its own folder, and the one transfer
 * engine (transfer/copy-images.ts) drives it. The engine decides what to copy and when (dedup,
 * concurrency, retries, order); a destination only knows how to hold what it is given.
 */

/** One name and the images (one per platform) that go under it. */
export interface CopyTarget {
  /** The name to give (tag and/or digest); undefined: content only, no name. */
  readonly ref: Reference | undefined;
  readonly images: readonly Image[];
  /** The index the images came from, kept byte for byte where the destination can. */
  readonly index?: IndexInfo;
  /** Images a location had to make anew to be read (see the store's readable images): their digest -> the location's own. */
  readonly originalDigests?: ReadonlyMap<string, Digest>;
}

export interface PutOptions {
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  onWarning?: (message: string) => void;
  /** Other scopes of this destination known to hold a blob (registry repositories: mount sources). */
  knownAt?: (digest: Digest) => readonly string[];
}

export interface BlobPutOptions extends PutOptions {  /** What the blob is, for messages and progress. */
  kind: 'config' | 'manifest' | 'index' | 'layer';
}

/** Opens the bytes to write: each call a fresh, verified stream (a retry opens again). */
export type OpenBytes = (options: OpenOptions) => Promise<Readable>;

export interface BlobPut {
  /** Bytes newly written; 0 when the destination had the blob. */
  written: number;
  existed: boolean;
  mounted?: boolean;
}

export interface LayerPut {
  /** The layer as the destination holds it (another digest when it compressed a tar on the way). */
  descriptor: Descriptor;
  /** The destination had it already (nothing written). */
  existed: boolean;
  /** Bytes newly written (blob and unpacked tar); bytes the destination had already. */
  written: number;
  present: number;
  mounted?: boolean;
}

/** An image manifest as the destination wrote it. */
export interface ManifestPut {
  digest: Digest;
  mediaType: string;
  size: number;
  /** The source's manifest digest (the same unless layers changed form). */
  sourceDigest: Digest;
}

export interface ImageDestination {
  /** For messages: "store /var/lib/ferry", "registry r.example:5000". */
  readonly name: string;
  /** Blob and layer copies this destination takes at once (the store stacks layers: 1). */
  readonly maxConcurrency: number;
  /** The scope blob dedup is kept per (a registry repository; '' for one flat content store). */
  scopeOf(target: CopyTarget): string;
  /** Before any bytes of `target`: claims, space checks, validation. */
  prepare(target: CopyTarget, options: PutOptions): Promise<void>;
  hasBlob(target: CopyTarget, digest: Digest, options: PutOptions): Promise<boolean>;
  /** Store a blob of known digest and size, verified while it is written. */
  putBlob(target: CopyTarget, descriptor: { digest: Digest; size: number; mediaType?: string }, open: OpenBytes, options: BlobPutOptions): Promise<BlobPut>;
  /**
   * Layers with the same key are copied once per copy (a registry repository: scope and digest);
   * undefined: the destination finds what it has itself (the store: by layer stack).
   */
  layerKey(target: CopyTarget, image: Image, index: number): string | undefined;
  /** Store layer `index` of `image` in the form this destination keeps (blob, tar, unpacked). */
  putLayer(target: CopyTarget, image: Image, index: number, options: PutOptions): Promise<LayerPut>;
  /** The image's manifest, after its config and layers (rewritten when layers changed form). */
  putManifest(target: CopyTarget, image: Image, layers: readonly LayerPut[], options: PutOptions): Promise<ManifestPut>;
  /** Several images under one name: the index, after their manifests (the source's when unchanged). */
  putIndex(target: CopyTarget, manifests: readonly ManifestPut[], options: PutOptions): Promise<Digest | undefined>;
  /** Name the target's images: last, so a crash leaves the old name or the complete new one. */
  setRef(target: CopyTarget, manifests: readonly ManifestPut[], index: Digest | undefined, options: PutOptions): Promise<void>;
  /** After the last target: make everything written durable and visible; release what `prepare` claimed. */
  commit(): Promise<void>;
  /** After a failure: leave nothing half-written visible; release what `prepare` claimed. */
  abort(): Promise<void>;
}

/**
 * A copy of images a location made (a container's commit, a build's layers) into a destination,
 * given by the use case that wires it (verbs/: the transfer engine into the store). Returns the
 * name each target was given, in order.
 */
export type CopyInto = (targets: readonly CopyTarget[]) => Promise<Array<string | undefined>>;
