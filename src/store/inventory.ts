import type { Digest } from '../oci/digest.js';
import { parseImageConfig, parseManifest } from '../oci/manifest.js';
import { chainIds } from './layers.js';
import type { Store } from './store.js';
import type { RefEntry } from './refs.js';
import { isoTime } from '../io/iso-time.js';

/**
 * What the store holds, for `export --since INVENTORY.json` on the connected side: every blob
 * digest, every layer (diffId, chainId, tar size) and the images. The bundle's delta reader takes
 * `blobs` and `diffIds` (src/bundle/delta.ts), and ignores the rest.
 */
export interface Inventory {
  kind: 'ferry-inventory';
  schemaVersion: 1;
  created: string;
  blobs: Digest[];
  diffIds: Digest[];
  layers: Array<{ chainId: Digest; diffId: Digest; tarSize: number; compressedDigests: Digest[] }>;
  images: Array<Pick<RefEntry, 'name' | 'manifestDigest' | 'platform'>>;
}

export async function inventory(store: Store): Promise<Inventory> {
  const layers = (await store.layers.list()).map((m) => ({ chainId: m.chainId, diffId: m.diffId, tarSize: m.size, compressedDigests: m.compressedDigests }));
  return {
    kind: 'ferry-inventory',
    schemaVersion: 1,
    created: isoTime(),
    blobs: await store.blobs.list(),
    diffIds: [...new Set(layers.map((l) => l.diffId))].sort(),
    layers,
    images: (await store.refs.list()).map((r) => ({ name: r.name, manifestDigest: r.manifestDigest, platform: r.platform })),
  };
}

/** Bytes of an image's unpacked layer tars (as recorded when unpacked); 0 for missing layers. */
export async function imageSize(store: Store, manifestDigest: Digest): Promise<number> {
  const parsed = parseManifest(await store.blobs.read(manifestDigest), undefined, `manifest ${manifestDigest}`);
  if (parsed.kind !== 'image') return 0;
  const config = parseImageConfig(await store.blobs.read(parsed.manifest.config.digest), `config ${parsed.manifest.config.digest}`);
  let total = 0;
  for (const id of chainIds(config.rootfs.diff_ids)) total += (await store.layers.meta(id))?.size ?? 0;
  return total;
}
