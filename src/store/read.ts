/**
 * The store's read API, for the runtime's start path: what `ferry run` needs to find an image and
 * claim its layers, without loading the importer, unpacker or tar-split that store/index.js brings
 * (tens of milliseconds of every container start). Public, like index.ts: runtime/ imports either.
 */
export { chainIds } from './layers.js';
export { StoreLock } from './lock.js';
export { ownedName } from './owner.js';
export { claimRootfs } from './rootfs-plan.js';
export { findStoreImage, openStoreImageByDigest } from './store-image.js';
export type { Store } from './store.js';
