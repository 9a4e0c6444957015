import { join } from 'node:path';
import type { Digest } from '../oci/digest.js';
import { chainIds, shortLinkOf } from './layers.js';

/**
 * The overlay mount for a container, as a value (containerd's snapshotter returns mounts as
 * data; only the runtime mounts). lowerDirs are relative to `cwd` (the store root), short
 * `l/<id>` links, top layer first as overlayfs wants, so 128 layers fit in one page of mount
 * options. The runtime writes this plan to `containers/<id>/rootfs.json` (under `store.lock`,
 * after checking the layers are present, before mounting); gc keeps the layers every plan there
 * names, so a prune can never pull layers from under a container.
 */
export interface RootfsPlan {
  /** Store root: mount from here so relative lowerdirs resolve. */
  cwd: string;
  /** `l/<short>` per layer, top first. */
  lowerDirs: string[];
  /** The image's layers as chainIds, bottom first (what gc keeps). */
  chainIds: Digest[];
  upperDir: string;
  workDir: string;
}

export interface RootfsPlanInput {
  storeRoot: string;
  /** The image config's rootfs.diff_ids, bottom first. */
  diffIds: readonly Digest[];
  containerId: string;
}

export function rootfsPlan(input: RootfsPlanInput): RootfsPlan {
  const ids = chainIds(input.diffIds);
  const containerDir = join(input.storeRoot, 'containers', input.containerId);
  return {
    cwd: input.storeRoot,
    lowerDirs: ids.map((id) => join('l', shortLinkOf(id))).reverse(),
    chainIds: ids,
    upperDir: join(containerDir, 'upper'),
    workDir: join(containerDir, 'work'),
  };
}

/** The `-o` data for mount(2): lowerdir=...,upperdir=...,workdir=... (index=off: no hardlink index on copy-up). */
export function overlayMountOptions(plan: RootfsPlan): string {
  const escape = (p: string): string => p.replace(/([\\:,])/g, '\\$1');
  return `lowerdir=${plan.lowerDirs.map(escape).join(':')},upperdir=${escape(plan.upperDir)},workdir=${escape(plan.workDir)},index=off`;
}
