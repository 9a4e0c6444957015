import { FerryError, isFerryError } from '../errors.js';
import type { BlobPut, CopyTarget, ImageDestination, LayerPut, ManifestPut, PutOptions } from '../oci/destination.js';
import { digestOf, shortDigest, type Digest } from '../oci/digest.js';
import type { Image, Layer } from '../oci/image.js';
import { layerMediaTypeFor } from '../oci/media-types.js';
import type { ProgressListener } from '../oci/progress-event.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import { ExcludeSet } from './delta.js';
import { rewriteManifest, type BundlePlan, type PlanSource } from './plan.js';
import {
  checkWriteOptions,
  outputName,
  planWith,
  resolveOptions,
  writePlannedBundle,
  type BundleOutput,
  type BundleProgressEvent,
  type BundleSource,
  type BundleSummary,
  type ResolvedWriteOptions,
  type WriteBundleOptions,
} from './write-bundle.js';

/**
 * A bundle as a copy destination. A bundle is one tar stream whose header (the table of contents,
 * with every entry's size) comes first, so nothing can be written while the engine copies: each
 * put records what the bundle needs (a raw layer's tar size, learnt by streaming its tar once when
 * no one states it), and `commit` plans the bundle and streams it to the output, reading every
 * layer a second time. The engine's concurrency, retries and abort drive the measuring.
 */

/** Raw layers measured at once: each one a decompression and a hash, bound by CPU. */
export const BUNDLE_MAX_MEASURE = 4;

/**
 * A copy target with the name its images carry in the bundle, as given (`BundleSource.ref`): the
 * text is kept as it is, so that the same sources give the same bytes, even a name that does not
 * parse as a reference (an OCI layout's directory, which import will refuse).
 */
export interface BundleCopyTarget extends CopyTarget {
  readonly bundleRef: string;
}

function isBundleCopyTarget(target: CopyTarget): target is BundleCopyTarget {
  return typeof (target as Partial<BundleCopyTarget>).bundleRef === 'string';
}

/** The reference of a bundle name, or undefined when it is not one (see BundleCopyTarget). */
function referenceOf(text: string): Reference | undefined {
  try {
    return parseReference(text);
  } catch (err) {
    // Not a reference: the copy carries it unnamed, the bundle under its text.
    if (isFerryError(err, 'INVALID_REFERENCE')) return undefined;
    throw err;
  }
}

/**
 * The copy targets of bundle sources: one per name and index, its images in the order given
 * (the plan keeps the first of two equal ones; the order of names does not matter, the plan sorts).
 */
export function bundleTargets(sources: readonly BundleSource[]): BundleCopyTarget[] {
  const byName = new Map<string, { bundleRef: string; ref: Reference | undefined; images: Image[]; index?: BundleSource['index'] }>();
  for (const { ref, image, index } of sources) {
    const key = `${ref}\u0000${index?.digest ?? ''}`;
    const target = byName.get(key);
    // Made with its first image: an empty array given one by push has room for 17 (a bundle has thousands of targets).
    if (target === undefined) byName.set(key, { bundleRef: ref, ref: referenceOf(ref), images: [image], ...(index === undefined ? {} : { index }) });
    else target.images.push(image);
  }
  return [...byName.values()];
}

/** BundleProgressEvents as the one ProgressEvent type: a line per blob measured, a line per blob written. */
export function bundleProgress(listener: ProgressListener): (e: BundleProgressEvent) => void {
  const seen = new Map<string, number>();
  return (e) => {
    const id = `${e.phase}:${e.digest}`;
    const label = `${e.phase} ${e.kind} ${shortDigest(e.digest)}`;
    const before = seen.get(id);
    // A retried measurement starts again from 0: its bytes count from there.
    if (before === undefined || e.bytes < before) {
      if (before === undefined) listener({ kind: 'start', id, label, ...(e.total > 0 ? { total: e.total } : {}) });
      seen.set(id, 0);
    }
    const delta = e.bytes - (seen.get(id) ?? 0);
    seen.set(id, e.bytes);
    if (delta > 0) listener({ kind: 'advance', id, bytes: delta });
    if (e.done) {
      listener({ kind: 'done', id, label, bytes: e.bytes });
      // Not kept past its end: a bundle of thousands of images measures and writes thousands of blobs.
      seen.delete(id);
    }
  };
}

export class BundleDestination implements ImageDestination {
  readonly name: string;
  readonly maxConcurrency = BUNDLE_MAX_MEASURE;
  private readonly resolved: ResolvedWriteOptions;
  /** Raw tar size by diffId: stated by a layer or the delta, or measured. */
  private readonly tarSizes = new Map<Digest, number>();
  /** What the plan takes: every image under its bundle name, in the order the engine finished them. */
  private readonly sources: PlanSource[] = [];
  private written: { plan: BundlePlan; summary: BundleSummary | undefined } | undefined;

  /**
   * `output` undefined: only plan (export --dry-run). The options are checked here, before any
   * work: a bad level or volume size must not cost a pull or a measuring pass.
   */
  constructor(
    private readonly output: BundleOutput | undefined,
    private readonly options: WriteBundleOptions = {},
  ) {
    checkWriteOptions(options, output);
    this.resolved = resolveOptions(options);
    this.name = output === undefined ? 'bundle plan' : `bundle ${outputName(output)}`;
  }

  /** The plan, after commit. */
  get plan(): BundlePlan {
    if (this.written === undefined) throw new FerryError('USAGE', `${this.name}: no plan before the copy is committed`);
    return this.written.plan;
  }

  /** What was written, after commit (undefined when only planning). */
  get summary(): BundleSummary | undefined {
    return this.written?.summary;
  }

  scopeOf(): string {
    return '';
  }

  /** Every image in a bundle has a name. */
  async prepare(target: CopyTarget): Promise<void> {
    this.bundleRef(target);
  }

  async hasBlob(): Promise<boolean> {
    return false;
  }

  /** Configs (and manifests) are the image's own bytes: the plan takes them from it, and the bundle carries them. */
  async putBlob(_target: CopyTarget, descriptor: { digest: Digest; size: number }): Promise<BlobPut> {
    return { written: descriptor.size, existed: this.options.exclude?.has(descriptor.digest) ?? false };
  }

  /** A raw layer once per diffId (it travels as its tar); a layer as pulled needs nothing here. */
  layerKey(_target: CopyTarget, image: Image, index: number): string {
    const layer = image.layers[index]!;
    return this.resolved.layers === 'raw' ? layer.diffId : layer.descriptor.digest;
  }

  async putLayer(target: CopyTarget, image: Image, index: number, options: PutOptions): Promise<LayerPut> {
    const layer = image.layers[index]!;
    const { descriptor, diffId } = layer;
    const exclude = this.options.exclude;
    if (this.resolved.layers !== 'raw') {
      const existed = exclude?.has(descriptor.digest) ?? false;
      return { descriptor, existed, written: existed ? 0 : descriptor.size, present: existed ? descriptor.size : 0 };
    }
    // The tar header needs the size first: measure when neither the layer nor the delta knows it.
    const known = this.tarSizes.get(diffId) ?? layer.tarSize ?? (exclude instanceof ExcludeSet ? exclude.tarSizes.get(diffId) : undefined);
    const size = known ?? (await this.measure(layer, this.bundleRef(target), options.signal));
    this.tarSizes.set(diffId, size);
    const existed = exclude !== undefined && (exclude.has(diffId) || exclude.has(descriptor.digest));
    const docker = descriptor.mediaType.startsWith('application/vnd.docker.');
    return { descriptor: { mediaType: layerMediaTypeFor('none', docker), digest: diffId, size }, existed, written: existed ? 0 : size, present: existed ? size : 0 };
  }

  /** Stream one layer's tar to learn its size (Layer.tar() verifies the diffId on the way). */
  private async measure(layer: Layer, ref: string, signal: AbortSignal | undefined): Promise<number> {
    const onProgress = this.options.onProgress;
    const digest = layer.diffId;
    const stream = await layer.tar(signal === undefined ? {} : { signal });
    let bytes = 0;
    try {
      for await (const chunk of stream) {
        signal?.throwIfAborted();
        bytes += (chunk as Buffer).length;
        onProgress?.({ phase: 'measure', digest, kind: 'layer', ref, bytes, total: 0, done: false });
      }
    } finally {
      stream.destroy();
    }
    onProgress?.({ phase: 'measure', digest, kind: 'layer', ref, bytes, total: bytes, done: true });
    return bytes;
  }

  /** The image under its bundle name; its manifest as the bundle's layout holds it (raw: layers as tars). */
  async putManifest(target: CopyTarget, image: Image): Promise<ManifestPut> {
    const ref = this.bundleRef(target);
    this.sources.push({ ref, image, ...(target.index === undefined ? {} : { index: target.index }) });
    const raw = this.resolved.layers === 'raw' ? rewriteManifest(image, this.tarSizes, ref) : image.rawManifest;
    return { digest: this.resolved.layers === 'raw' ? digestOf(raw) : image.digest, mediaType: image.mediaType, size: raw.length, sourceDigest: image.digest };
  }

  /** The index travels byte for byte with the images it lists (the plan records it per image). */
  async putIndex(target: CopyTarget): Promise<Digest | undefined> {
    return target.index?.digest;
  }

  /** Names are in the images recorded by putManifest: the layout's index.json is planned at commit. */
  async setRef(): Promise<void> {}

  /** Plan the bundle, then stream it to the output (a file appears only when complete). */
  async commit(): Promise<void> {
    const plan = await planWith(this.sources, this.tarSizes, this.options);
    // What was collected is in the plan now: not held beside it while the bundle streams.
    this.forget();
    try {
      this.written = { plan, summary: this.output === undefined ? undefined : await writePlannedBundle(plan, this.output, this.options) };
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /**
   * Nothing is written before commit, and a failed write removes its own temp file or volumes;
   * what is left to drop is what was collected.
   */
  async abort(): Promise<void> {
    this.forget();
  }

  private forget(): void {
    this.sources.length = 0;
    this.tarSizes.clear();
  }

  private bundleRef(target: CopyTarget): string {
    if (isBundleCopyTarget(target)) return target.bundleRef;
    if (target.ref === undefined) {
      throw new FerryError('USAGE', `${this.name}: ${target.images.map((i) => i.digest).join(', ')}: a bundle names every image it carries`, {
        hint: 'give the images a name (a reference) to carry them under',
      });
    }
    return formatReference(target.ref);
  }
}
