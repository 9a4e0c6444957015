import { resolve } from 'node:path';
import { listDockerArchive } from '../archive/index.js';
import { UsageError } from '../errors.js';
import { hostPlatform, type Platform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import { formatReference, parseReference } from '../oci/reference.js';
import { StoreDestination, type Store } from '../store/index.js';
import { copyImages, type CopyResult } from '../transfer/copy-images.js';
import { noRegistry, openSource, parseSourceSpec, type OpenedSource } from './locations.js';

export interface ImportArchiveOptions {
  /** Platforms to take from an index (default: this host's). */
  platforms?: Platform[] | 'all';
  keepBlobs?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  onWarning?: (message: string) => void;
}

/**
 * The images an archive import loads. A docker-archive named without a selector loads every image
 * under every tag it has, as docker load does (`docker save` / `podman save -m` of several images);
 * anything else is what export would read from it.
 */
async function openArchiveImports(spec: string, platforms: Platform[] | 'all' | undefined): Promise<OpenedSource> {
  const parsed = parseSourceSpec(spec);
  if (parsed.kind === 'docker-archive' && parsed.selector === undefined) {
    const archive = await listDockerArchive(resolve(parsed.path));
    const untagged = archive.entries.find((e) => e.repoTags.length === 0);
    if (untagged !== undefined) {
      await archive.close();
      throw new UsageError(`import ${parsed.path}: image @${untagged.index} of the docker-archive has no name (RepoTags is empty)`, {
        hint: 'tag it before saving (docker tag / podman tag), or import the others one by one with docker-archive:FILE:@N',
      });
    }
    const images = archive.entries.flatMap((e) => e.repoTags.map((tag) => ({ ref: formatReference(parseReference(tag)), image: e.image })));
    return { images, close: archive.close };
  }
  if (parsed.kind === 'registry') throw new UsageError(`import ${spec}: import reads local files only`, { hint: 'ferry pull fetches images from a registry into the store' });
  return openSource(spec, {
    platforms: platforms ?? [hostPlatform()],
    client: noRegistry('import reads local files only'),
  });
}

/**
 * `ferry import docker-archive:FILE | oci-archive:FILE | oci:DIR`: the archive's images, copied
 * into the store by the transfer engine; one result per image and name, in the archive's order.
 */
export async function importArchive(store: Store, spec: string, options: ImportArchiveOptions = {}): Promise<CopyResult[]> {
  const opened = await openArchiveImports(spec, options.platforms);
  try {
    const targets = opened.images.map(({ ref, image }) => ({ ref: parseReference(ref), images: [image], ...(opened.index ? { index: opened.index } : {}) }));
    return await copyImages(targets, new StoreDestination(store, options.keepBlobs === undefined ? {} : { keepBlobs: options.keepBlobs }), {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
    });
  } finally {
    await opened.close();
  }
}
