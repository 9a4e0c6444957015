import { dirname, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { forgetLayoutIndexes, SharedArchives } from '../archive/index.js';
import { BundleDestination, bundleProgress, bundleTargets } from '../bundle/bundle-destination.js';
import type { BundleTool } from '../bundle/format.js';
import type { BundlePlan } from '../bundle/plan.js';
import { formatBytes } from '../bundle/size.js';
import { carryFile } from '../bundle/tools.js';
import { checkWriteOptions, type BundleOutput, type BundleSource, type BundleSummary, type WriteBundleOptions } from '../bundle/write-bundle.js';
import { UsageError } from '../errors.js';
import type { Image } from '../oci/image.js';
import type { Platform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import type { RegistryClient } from '../registry/client.js';
import type { Store } from '../store/index.js';
import { copyImages, type CopyOptions } from '../transfer/copy-images.js';
import { cacheImages } from '../transfer/pull-cache.js';
import { openSource, parseSourceSpec } from './locations.js';

/**
 * `ferry export`: images from wherever they are (a registry, an archive, an OCI layout, the
 * store) copied by the transfer engine into one bundle destination, which measures what the
 * bundle's table of contents needs while the engine copies and writes the bundle at commit.
 */

/** The engine's options for a bundle copy: the measuring pass runs under its limit, retries and abort. */
function copyOptions(options: WriteBundleOptions, onProgress: ProgressListener | undefined): CopyOptions {
  return {
    jobs: options.jobs ?? 1,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(onProgress === undefined ? {} : { onProgress }),
  };
}

/**
 * Write one bundle of these images: a copy into a BundleDestination. Raw layers that do not state
 * their tar size are measured first (`jobs` at a time), then every entry streams through one zstd
 * compressor into the output, in constant memory whatever the layer sizes. A file output appears
 * atomically, and only when complete. `notes` hears the engine's own events (a retried layer).
 */
export async function writeBundle(sources: BundleSource[], output: BundleOutput, options: WriteBundleOptions = {}, notes?: ProgressListener): Promise<BundleSummary> {
  const destination = new BundleDestination(output, options);
  await copyImages(bundleTargets(sources), destination, copyOptions(options, notes));
  return destination.summary!;
}

/** Just the plan (for `export --dry-run` and tests): what would be written, without writing. */
export async function planBundleFor(sources: BundleSource[], options: WriteBundleOptions = {}): Promise<BundlePlan> {
  const destination = new BundleDestination(undefined, options);
  await copyImages(bundleTargets(sources), destination, copyOptions(options, undefined));
  return destination.plan;
}

/** One image named as the user wrote it (`redis:7`, `oci:DIR:REF`, `docker-archive:FILE`), and its platforms. */
export interface ExportRequest {
  text: string;
  platforms: Platform[] | 'all';
}

/** A file carried beside the bundle (export --with-ferry: the ferry executable). */
export interface CarriedFile {
  path: string;
  name: string;
  platform: string;
}

export interface ExportImagesOptions extends Omit<WriteBundleOptions, 'onProgress' | 'tools'> {
  /** Registry client, created on first need (the caller closes it). */
  client: () => RegistryClient;
  /** The local store, asked first for a bare reference; absent: always the registry (--pull). */
  store?: Store;
  /** Pull cache for registry blobs (an interrupted export fetches only what it lacked); absent: none. */
  cacheDir?: string;
  /** Blobs pulled at once, and layers measured at once (at most BUNDLE_MAX_MEASURE). Default 4. */
  jobs?: number;
  /** Files to carry beside the bundle: recorded in its header, listed in NAME.sha256. */
  carry?: readonly CarriedFile[];
  onProgress?: ProgressListener;
}

/** The bundle's own options among export's. */
function bundleOptionsOf(options: ExportImagesOptions): WriteBundleOptions {
  const { client: _client, store: _store, cacheDir: _cacheDir, carry: _carry, onProgress: _onProgress, ...bundle } = options;
  return bundle;
}

/**
 * `ferry export IMAGE...` as one call: resolve every request (the store first for a bare
 * reference), bring registry blobs through the pull cache, carry the requested files beside the
 * output, and write the bundle.
 */
export async function exportImages(requests: readonly ExportRequest[], output: BundleOutput, options: ExportImagesOptions): Promise<BundleSummary> {
  if (requests.length === 0) throw new UsageError('export: no images given', { hint: 'name images (ferry export redis:7 mysql:8) or a definition file (-f bundles/databases.yaml)' });
  const progress = options.onProgress;
  const jobs = options.jobs ?? 4;
  const carryDir = output === '-' || output instanceof Writable ? undefined : dirname(resolve(typeof output === 'string' ? output : output.path));
  if (options.carry !== undefined && options.carry.length > 0 && carryDir === undefined) {
    throw new UsageError('export: files are carried beside a bundle file, not a stream', { hint: 'write the bundle to a file; the executable goes beside it' });
  }
  const { client, store, cacheDir, carry } = options;
  const writeOptions: WriteBundleOptions = { ...bundleOptionsOf(options), jobs };
  // A bad level, window or volume size costs neither a pull nor a store lock.
  checkWriteOptions(writeOptions, output);

  // Only the sources' closes are kept: an opened source holds its images, and a bundle's plan holds what it needs of them.
  const closes: Array<() => Promise<void>> = [];
  const archives = new SharedArchives(options.signal === undefined ? {} : { signal: options.signal });
  try {
    const sources: BundleSource[] = [];
    const fromRegistry = new Set<Image>();
    for (const request of requests) {
      const source = await openSource(request.text, { platforms: request.platforms, client, archives, ...(store === undefined ? {} : { store }) });
      closes.push(source.close);
      if (source.fromStore === true) progress?.({ kind: 'note', message: `${request.text}: taken from the local store (--pull to fetch it from the registry)` });
      for (const entry of source.images) {
        // The index travels with its images (the bundle keeps it for those it lists).
        sources.push(source.index === undefined ? entry : { ...entry, index: source.index });
        if (parseSourceSpec(request.text).kind === 'registry' && source.fromStore !== true) fromRegistry.add(entry.image);
      }
    }
    forgetLayoutIndexes();

    // Registry blobs go through the pull cache: a run that was interrupted fetches only what it lacks.
    if (cacheDir !== undefined && fromRegistry.size > 0) {
      const remote = sources.filter((s) => fromRegistry.has(s.image));
      const { images: cached, summary } = await cacheImages(
        remote.map((s) => s.image),
        { dir: cacheDir, jobs, ...(options.signal === undefined ? {} : { signal: options.signal }), ...(progress === undefined ? {} : { onProgress: progress }) },
      );
      const byImage = new Map(remote.map((s, i) => [s.image, cached[i]!]));
      for (const s of sources) s.image = byImage.get(s.image) ?? s.image;
      progress?.({
        kind: 'note',
        message: `pulled ${summary.fetched} blobs (${formatBytes(summary.fetchedBytes)}), ${summary.reused} already in the cache (${formatBytes(summary.reusedBytes)})`,
      });
    }

    if (carry !== undefined && carry.length > 0) {
      const tools: BundleTool[] = [];
      for (const file of carry) tools.push(await carryFile(file.path, carryDir!, file.name, file.platform));
      writeOptions.tools = tools;
    }
    if (progress !== undefined) writeOptions.onProgress = bundleProgress(progress);
    return await writeBundle(sources, output, writeOptions, progress);
  } finally {
    for (const close of closes) await close();
    await archives.close();
  }
}
