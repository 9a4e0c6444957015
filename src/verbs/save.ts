import type { Writable } from 'node:stream';
import { DockerArchiveDestination } from '../archive/docker-archive-destination.js';
import { UsageError } from '../errors.js';
import type { CopyTarget } from '../oci/destination.js';
import type { Image } from '../oci/image.js';
import type { ProgressListener } from '../oci/progress-event.js';
import type { Reference } from '../oci/reference.js';
import { copyImages } from '../transfer/copy-images.js';

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
