import { readFile, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, isFerryError } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { parseImageConfig, parseManifest } from '../oci/manifest.js';
import { readdirOrEmpty } from './blobs.js';
import { COMPRESSED_CACHE_DIR, CompressedLayerCache } from './compressed-cache.js';
import { chainIds } from './layers.js';
import type { Store } from './store.js';

/**
 * What the store must keep, as a value (plan, then act): every ref's manifest, its index, config,
 * layer blobs (compressed, and uncompressed tars named by diffId), and the layers of its chain;
 * plus the layers named by containers' rootfs plans.
 */
export interface KeepSet {
  blobs: Set<Digest>;
  /** chainIds */
  layers: Set<Digest>;
}

export async function keepSet(store: Store): Promise<KeepSet> {
  const blobs = new Set<Digest>();
  const layers = new Set<Digest>();
  for (const ref of await store.refs.list()) {
    blobs.add(ref.manifestDigest);
    if (ref.indexDigest) blobs.add(ref.indexDigest);
    let raw: Buffer;
    try {
      raw = await store.blobs.read(ref.manifestDigest);
    } catch (err) {
      // A broken ref keeps what it still names; fsck reports it.
      if (isFerryError(err, 'NOT_FOUND') || isFerryError(err, 'DIGEST_MISMATCH')) continue;
      throw err;
    }
    const parsed = parseManifest(raw, ref.mediaType, `manifest ${ref.manifestDigest}`);
    if (parsed.kind !== 'image') continue;
    blobs.add(parsed.manifest.config.digest);
    for (const l of parsed.manifest.layers) blobs.add(l.digest);
    let rawConfig: Buffer;
    try {
      rawConfig = await store.blobs.read(parsed.manifest.config.digest);
    } catch (err) {
      if (isFerryError(err, 'NOT_FOUND') || isFerryError(err, 'DIGEST_MISMATCH')) continue;
      throw err;
    }
    const config = parseImageConfig(rawConfig, `config ${parsed.manifest.config.digest}`);
    for (const d of config.rootfs.diff_ids) blobs.add(d);
    for (const id of chainIds(config.rootfs.diff_ids)) layers.add(id);
  }
  for (const id of await readdirOrEmpty(store.containersDir)) {
    let text: string;
    try {
      text = await readFile(join(store.containersDir, id, 'rootfs.json'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    const plan = JSON.parse(text) as { chainIds?: unknown };
    if (Array.isArray(plan.chainIds)) for (const c of plan.chainIds) if (typeof c === 'string' && isDigest(c)) layers.add(c);
  }
  return { blobs, layers };
}

export interface PruneResult {
  blobsRemoved: Digest[];
  layersRemoved: Digest[];
  bytesFreed: number;
  dryRun: boolean;
}

/**
 * Remove unreferenced blobs and layers. Runs under the store lock and refuses while an import is
 * in progress (its blobs have no ref yet: its lease in tmp/ says so).
 */
export async function prune(store: Store, options: { dryRun?: boolean } = {}): Promise<PruneResult> {
  const dryRun = options.dryRun ?? false;
  const trash: string[] = [];
  const result = await store.lock.with(async () => {
    const leases = await store.liveLeases();
    if (leases.length > 0) {
      throw new FerryError('IN_USE', `prune ${store.root}: an import is in progress (process ${leases[0]!.split('.')[0]})`, {
        hint: 'run prune again when the import has finished',
      });
    }
    const keep = await keepSet(store);
    const result: PruneResult = { blobsRemoved: [], layersRemoved: [], bytesFreed: 0, dryRun };
    for (const digest of await store.blobs.list()) {
      if (keep.blobs.has(digest)) continue;
      result.blobsRemoved.push(digest);
      if (dryRun) result.bytesFreed += (await store.blobs.stat(digest))?.size ?? 0;
      else result.bytesFreed += await store.blobs.delete(digest);
    }
    // Upper layers first, so a parent is never removed before its child.
    const metas = await store.layers.list();
    const depth = new Map<string, number>();
    const byId = new Map(metas.map((m) => [m.chainId as string, m]));
    const depthOf = (id: string): number => {
      const known = depth.get(id);
      if (known !== undefined) return known;
      const parent = byId.get(id)?.parent;
      const d = parent ? depthOf(parent) + 1 : 0;
      depth.set(id, d);
      return d;
    };
    for (const hex of await store.layers.ids()) {
      const chainId = `sha256:${hex}`;
      // Names that are not chainIds are leftovers for fsck, not garbage to guess about.
      if (!isDigest(chainId) || keep.layers.has(chainId)) continue;
      result.layersRemoved.push(chainId);
    }
    result.layersRemoved.sort((a, b) => depthOf(b) - depthOf(a));
    for (const chainId of result.layersRemoved) {
      const hex = chainId.slice('sha256:'.length);
      if (dryRun) result.bytesFreed += byId.get(chainId)?.size ?? 0;
      else {
        const t = await store.layers.detachUnlocked(hex);
        if (t !== undefined) trash.push(t);
      }
    }
    // Compressed forms (push, serve) of layers that are gone go too.
    const kept = new Set<Digest>(keep.blobs);
    for (const meta of metas) if (keep.layers.has(meta.chainId)) kept.add(meta.diffId);
    const cache = new CompressedLayerCache(join(store.root, COMPRESSED_CACHE_DIR));
    result.bytesFreed += await cache.prune((diffId) => kept.has(diffId), (hex) => keep.layers.has(`sha256:${hex}` as Digest), dryRun);
    if (!dryRun) {
      await removeDanglingLinks(store);
      // `ferry build`'s cache (keys -> layers) goes with the unreferenced layers it kept.
      await rm(join(store.root, 'build-cache'), { recursive: true, force: true });
    }
    return result;
  });
  // Out of layers/ already: the slow deletion runs without the lock.
  for (const t of trash) result.bytesFreed += await store.layers.dispose(t);
  return result;
}

/** l/ entries whose layer is gone. */
export async function danglingLinks(store: Store): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdirOrEmpty(store.layers.linkDir)) {
    const target = await readlink(join(store.layers.linkDir, name));
    const m = /^\.\.\/layers\/([a-f0-9]{64})\/diff$/.exec(target);
    if (!m || !(await store.layers.has(`sha256:${m[1]!}` as Digest))) out.push(name);
  }
  return out;
}

async function removeDanglingLinks(store: Store): Promise<void> {
  for (const name of await danglingLinks(store)) await rm(join(store.layers.linkDir, name), { force: true });
}

