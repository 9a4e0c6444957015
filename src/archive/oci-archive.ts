import type { ArchiveOptions, OpenedArchive } from './archive-file.js';
import { openArchiveFor } from './archive-file.js';
import { tarSource } from './layout-source.js';
import { listLayoutEntries, resolveLayout, type LayoutEntry, type PlatformRequest } from './oci-layout.js';

/**
 * Read an OCI archive: an OCI image layout in a tar (plain, gzip or zstd), as written by
 * `skopeo copy ... oci-archive:FILE`. A plain tar is read in place through an index of its
 * entries; a compressed one is decompressed to a temporary tar first. Selector and platforms
 * as for `openOciLayout`. Call `close()` when done with the images.
 */
export async function openOciArchive(
  file: string,
  selector?: string,
  platforms?: PlatformRequest,
  options: ArchiveOptions = {},
): Promise<OpenedArchive> {
  const archive = await openArchiveFor(file, `oci-archive ${file}`, options);
  try {
    const resolved = await resolveLayout(tarSource(archive.index), selector, platforms);
    return { ...resolved, close: archive.close };
  } catch (err) {
    await archive.close();
    throw err;
  }
}

/** The entries of an OCI archive's index.json. */
export async function listOciArchive(file: string, options: ArchiveOptions = {}): Promise<LayoutEntry[]> {
  const archive = await openArchiveFor(file, `oci-archive ${file}`, options);
  try {
    return await listLayoutEntries(tarSource(archive.index));
  } finally {
    await archive.close();
  }
}
