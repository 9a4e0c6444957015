export { openDockerArchive, listDockerArchive, type DockerArchive, type DockerArchiveEntry } from './docker-archive.js';
export { openOciArchive, listOciArchive } from './oci-archive.js';
export {
  openOciLayout,
  forgetLayoutIndexes,
  listOciLayout,
  resolveLayout,
  loadLayoutImage,
  blobPath,
  REF_NAME_ANNOTATION,
  type LayoutEntry,
  type PlatformRequest,
} from './oci-layout.js';
export { openTarArchive, sniffCompression, SharedArchives, type ArchiveOptions, type OpenedArchive, type OpenedTar } from './archive-file.js';
export { dirSource, tarSource, type LayoutSource } from './layout-source.js';
export { indexTar, normalizeEntryName, type TarEntry, type TarEntryType, type TarIndex } from './tar-index.js';
