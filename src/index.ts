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
export {
  RegistryClient,
  type RegistryClientOptions,
  type Repository,
  type PushBlobResult,
} from './registry/client.js';
export { resolveRemote } from './registry/remote-image.js';
export { pushImage, pushResolved, type PushOptions } from './verbs/push.js';
export { lookupCredentials, storeCredentials, removeCredentials, dockerConfigPath } from './registry/docker-config.js';
export type { Credentials } from './registry/auth.js';
export {
  openStore,
  resolveStoreRoot,
  Store,
  openStoreImage,
  openStoreImageByDigest,
  findStoreImage,
  matchStoreImages,
  prune,
  fsck,
  inventory,
  rootfsPlan,
  overlayMountOptions,
  chainIdOf,
  chainIds,
  refName,
  type OpenStoreOptions,
  type RefEntry,
  type StoreMatch,
  type RootfsPlan,
  type LayerMeta,
  type Inventory,
  type FsckResult,
  type PruneResult,
} from './store/index.js';
export * from './bundle/index.js';
export { writeBundle, planBundleFor, exportImages, type ExportRequest, type ExportImagesOptions, type CarriedFile } from './verbs/export.js';
export {
  runContainer,
  createContainer,
  stopContainer,
  startContainer,
  restartContainer,
  killContainer,
  removeContainer,
  execInContainer,
  containerLogs,
  containerDiff,
  listAllContainers as listContainers,
  type RunOptions,
  type RunResult,
  type ExecOptions,
} from './runtime/containers.js';
export { commitContainer, type CommitOptions, type CommitResult } from './verbs/commit.js';
export { buildImage, type BuildOptions, type BuildResult } from './verbs/build.js';
export { parseDockerfile, type Dockerfile, type Instruction, type Heredoc } from './build/dockerfile.js';
export { LaunchError } from './runtime/launcher.js';
export { findContainer, type ContainerInfo, type ContainerRecord, type ContainerStatus } from './runtime/state.js';
export type { Change, ChangeKind } from './runtime/changes.js';
export { startRestartable, type BootResult } from './runtime/boot.js';
export { parseRestartPolicy, type RestartPolicy, type RestartPolicyName } from './runtime/restart-policy.js';
export type { HealthState, HealthResult, HealthcheckConfig, HealthOnFailure } from './runtime/healthcheck.js';
export { bootUnit, containerUnit } from './runtime/systemd.js';
export { writeDockerArchive, saveImages, type SaveImage, type WriteDockerArchiveOptions, type SaveImagesOptions } from './verbs/save.js';
export { DockerArchiveDestination } from './archive/docker-archive-destination.js';
export { startRegistryServer, type RegistryContent, type RegistryServer, type ServedBlob, type ServedManifest } from './registry/server.js';
export { servedContent, type ServedContent, type ServeOptions } from './verbs/serve.js';
export { pushImages, type PushRequest, type PushResult, type PushImagesOptions, type PushedImage } from './verbs/push.js';
export { pushFrom, type PushSource, type PushFromOptions } from './verbs/push-from.js';
export { pushBundle, type PushBundleOptions } from './verbs/push-bundle.js';
export { CompressedLayerCache, type CompressedLayer } from './store/compressed-cache.js';
export { compressImage, replaceLayers, type CompressedLayers } from './transfer/compressed-image.js';
export { parseDestination, reroot, type Destination, type PushCompression, type PushTarget } from './transfer/push-target.js';
export { copyImages, type CopyOptions, type CopyResult, type CopiedImage } from './transfer/copy-images.js';
export { concurrencyLimit } from './transfer/limiter.js';
export { StoreDestination, type StoreDestinationOptions } from './store/store-destination.js';
export { RegistryDestination, type RegistryDestinationOptions, type CompressedForms } from './registry/registry-destination.js';
export { importArchive, type ImportArchiveOptions } from './verbs/import-archive.js';
export { importBundle, type ImportBundleOptions, type ImportBundleSummary } from './verbs/import-bundle.js';
export { importImage, type ImportOptions, type ImportSummary } from './verbs/import-image.js';
export { importImages, detectImportSource, type ImportImagesOptions, type ImportResult, type ImportKind } from './verbs/import.js';
export { pullImages, type PullOptions, type PullResult } from './verbs/pull.js';
export { openSource, parseSourceSpec, type OpenedSource, type OpenSourceOptions, type SourceImage, type SourceSpec } from './verbs/locations.js';
export { openStoreName, openAllStoreNames, readableStoreImage, storeLayerCache, type StoreName } from './verbs/store-names.js';
export { defaultCacheDir, cacheImages, type CacheSummary } from './transfer/pull-cache.js';
