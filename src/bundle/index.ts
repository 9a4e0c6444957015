export {
  BUNDLE_FORMAT,
  BUNDLE_FORMAT_VERSION,
  HEADER_ENTRY,
  SIGNATURE_ENTRY,
  PLAIN_ZSTD_MAX_WINDOW_LOG,
  blobEntryName,
  parseHeader,
  serializeHeader,
  type BlobEncoding,
  type BlobKind,
  type BundleBlob,
  type BundleCompression,
  type BundleHeader,
  type BundleImage,
  type BundleImageLayer,
  type BundleIndexRef,
  type BundleRequirement,
  type BundleTotals,
  type LayerEncoding,
} from './format.js';
export { planBundle, rewriteManifest, type BundlePlan, type PlanOptions, type PlanSource, type PlannedEntry } from './plan.js';
export {
  checkWriteOptions,
  bundleTime,
  DEFAULT_LEVEL,
  DEFAULT_WINDOW_LOG,
  DEFAULT_WORKERS,
  MAX_LEVEL_ALIAS,
  type BundleOutput,
  type BundleProgressEvent,
  type BundleSource,
  type BundleSummary,
  type WriteBundleOptions,
} from './write-bundle.js';
export { BundleDestination, BUNDLE_MAX_MEASURE, bundleProgress, bundleTargets, type BundleCopyTarget } from './bundle-destination.js';
export {
  openBundleStream,
  readBundleHeader,
  type BundleBlobEvent,
  type BundleEvent,
  type BundleHeaderEvent,
  type BundleHeaderInfo,
  type BundleInput,
  type OpenBundleOptions,
} from './read-bundle.js';
export { verifyBundle, type VerifyBundleOptions, type VerifyReport, type SignatureState } from './verify-bundle.js';
export { describeBundle, type BundleDescription } from './describe.js';
export { ExcludeSet, excludeSetFromHeader, excludeSetFromInventory, loadExcludeSet } from './delta.js';
export { loadPrivateKey, loadPublicKey, privateKeyFrom, publicKeyFrom, signHeader, verifyHeaderSignature, writeKeyPair, type KeyPairFiles } from './sign.js';
export { FAT32_MAX_FILE, MIN_VOLUME_SIZE, formatBytes, formatMemory, parseSize } from './size.js';
export { locateBundle, checksumPath, volumePath, type BundleLocation, type VolumeInfo } from './volumes.js';
export { openBundleSource, type OpenedBundle, type BundleSourceOptions, type BundleTarget } from './bundle-source.js';
