import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { writeFileAtomicSync } from '../io/atomic-file.js';
import { chainIds, shortLinkOf } from './layers.js';
import type { Store } from './store.js';

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

/**
 * The runtime's one call before mounting: check every layer of the image is in the store (and its
 * l/ link is there), then record the plan in `containers/<id>/rootfs.json`, all under the store
 * lock so a concurrent prune either ran before (and the check fails clearly) or keeps the layers.
 */
export async function claimRootfs(store: Store, containerId: string, diffIds: readonly Digest[]): Promise<RootfsPlan> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(containerId)) {
    throw new FerryError('USAGE', `container id "${containerId}": use letters, digits, '.', '_' or '-'`);
  }
  const plan = rootfsPlan({ storeRoot: store.root, diffIds, containerId });
  const dir = join(store.containersDir, containerId);
  await store.lock.with(async () => {
    for (const chainId of plan.chainIds) {
      const meta = await store.layers.meta(chainId);
      if (meta === undefined) {
        throw new FerryError('NOT_FOUND', `layer ${chainId} of container ${containerId} is not in the store`, { hint: 'import the image again; ferry fsck lists what is missing' });
      }
      await store.layers.ensureLink(chainId, meta.link);
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileAtomicSync(join(dir, 'rootfs.json'), `${JSON.stringify(plan, null, 2)}\n`);
  });
  return plan;
}
