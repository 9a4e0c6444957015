import type { Writable } from 'node:stream';
import { DockerArchiveDestination } from '../archive/docker-archive-destination.js';
import { SharedArchives } from '../archive/index.js';
import { FerryError, UsageError } from '../errors.js';
import type { CopyTarget } from '../oci/destination.js';
import type { Image } from '../oci/image.js';
import { formatPlatform, hostPlatform, platformMatches, type Platform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import { familiarReference, parseReference, type Reference } from '../oci/reference.js';
import type { Store } from '../store/index.js';
import { copyImages } from '../transfer/copy-images.js';
import { noRegistry, openSource, parseSourceSpec, type OpenedSource } from './locations.js';
import { openStoreName } from './store-names.js';

export interface SaveImage {
  image: Image;
  /** Names to load it as (`redis:7`, `registry.internal:5000/app:1`); none for an untagged image. */
  tags: readonly Reference[];
}

export interface WriteDockerArchiveOptions {
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  /** Seconds since the epoch for every entry (default: 0, so the same images give the same bytes). */
  mtime?: number;
}

/**
 * `ferry save`: `images` copied into a docker-archive (for docker load, podman load, ctr images
 * import), to a file (it appears only when complete) or a stream (e.g. stdout).
 */
export async function writeDockerArchive(images: readonly SaveImage[], output: string | Writable, options: WriteDockerArchiveOptions = {}): Promise<void> {
  if (images.length === 0) throw new UsageError('save: no images to write');
  const targets: CopyTarget[] = images.flatMap(({ image, tags }): CopyTarget[] => (tags.length === 0 ? [{ ref: undefined, images: [image] }] : tags.map((ref) => ({ ref, images: [image] }))));
  await copyImages(targets, new DockerArchiveDestination(output, options.mtime === undefined ? {} : { mtime: options.mtime }), {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
}

export interface SaveImagesOptions extends WriteDockerArchiveOptions {
  /** The store, opened read-only on first need (local files need none). */
  store: () => Promise<Store>;
  /** The platform to save of multi-platform images; default this host's, or a store name's only image. */
  platform?: Platform;
}

/**
 * `ferry save NAME... -o FILE`: each name is a store image or a local location (oci:DIR,
 * docker-archive:FILE...); an image named twice goes once under all its names. Returns what
 * was written, for the caller to report.
 */
export async function saveImages(names: readonly string[], output: string | Writable, options: SaveImagesOptions): Promise<SaveImage[]> {
  const platform = options.platform ?? hostPlatform();
  const opened: OpenedSource[] = [];
  const archives = new SharedArchives();
  const entries: SaveImage[] = [];
  const add = (image: Image, tag: Reference | undefined): void => {
    const existing = entries.find((e) => e.image.digest === image.digest);
    const tags = tag === undefined || tag.tag === undefined ? [] : [tag];
    if (existing === undefined) entries.push({ image, tags });
    else existing.tags = [...existing.tags, ...tags.filter((t) => !existing.tags.some((x) => familiarReference(x) === familiarReference(t)))];
  };
  try {
    let store: Store | undefined;
    for (const text of names) {
      if (parseSourceSpec(text).kind !== 'registry') {
        const source = await openSource(text, {
          platforms: [platform],
          client: noRegistry('save reads images from the store or local files'),
          archives,
        });
        opened.push(source);
        for (const s of source.images) add(s.image, s.image.ref ? parseReference(s.ref) : undefined);
        continue;
      }
      store ??= await options.store();
      const name = await openStoreName(store, text);
      const image = name.images.find((i) => platformMatches(platform, i.platform)) ?? (name.images.length === 1 && options.platform === undefined ? name.images[0] : undefined);
      if (image === undefined) {
        throw new FerryError('PLATFORM_NOT_FOUND', `save ${text}: the store has it for ${name.images.map((i) => formatPlatform(i.platform)).join(', ')}, not ${formatPlatform(platform)}`, {
          hint: 'choose one with --platform',
        });
      }
      add(image, name.ref);
    }
    await writeDockerArchive(entries, output, options);
    return entries;
  } finally {
    for (const s of opened) await s.close();
    await archives.close();
  }
}
