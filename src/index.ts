export * from './errors.js';
export * from './oci/index.js';
export {
  openDockerArchive,
  listDockerArchive,
  openOciArchive,
  listOciArchive,
  openOciLayout,
  listOciLayout,
  type ArchiveOptions,
  type DockerArchive,
  type DockerArchiveEntry,
  type LayoutEntry,
  type OpenedArchive,
  type PlatformRequest,
} from './archive/index.js';
