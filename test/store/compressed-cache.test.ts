import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex, digestOf } from '../../src/oci/digest.js';
import { COMPRESSED_CACHE_DIR, CompressedLayerCache } from '../../src/store/compressed-cache.js';
import { chainIds, openStore, prune, refName, type Store } from '../../src/store/index.js';
import { importImage } from '../../src/verbs/import-image.js';
import { buildTar } from '../helpers/tar-builder.js';
import { memoryImage } from '../helpers/memory-image.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

let base: string;
let store: Store;
beforeAll(async () => {
  base = await makeTempDir('compressed-cache');
  store = await openStore({ root: join(base, 'store') });
});
afterAll(async () => {
  await removeDir(base);
});

const baseTar = buildTar([
  { name: 'etc/', type: 'dir' },
  { name: 'etc/passwd', body: 'root:x:0:0::/root:/bin/sh\n' },
]);
const upperTar = buildTar([{ name: 'etc/new', body: 'new '.repeat(1000) }]);

async function names(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

describe('the compressed-layer cache in the store', () => {
  it('makes a compressed form once (ingested: nothing left in tmp/), and ferry prune drops the forms of layers that are gone', async () => {
    const a = memoryImage([baseTar], { ref: 'a:1' });
    const b = memoryImage([baseTar, upperTar], { ref: 'b:1' });
    await importImage(store, a);
    await importImage(store, b);
    const dir = join(store.root, COMPRESSED_CACHE_DIR);
    const cache = new CompressedLayerCache(dir);
    const lower = await cache.ensure(a.layers[0]!, 'gzip');
    const upper = await cache.ensure(b.layers[1]!, 'gzip');
    expect(digestOf(await readFile(cache.blobPath(upper.digest)))).toBe(upper.digest);
    expect((await cache.ensure(b.layers[1]!, 'gzip')).digest).toBe(upper.digest);
    expect(await names(join(dir, 'tmp'))).toEqual([]);
    // Tars made anew are remembered per chain; a blob no record names yet (a push between its blob and record) stays.
    const chains = chainIds(b.config.rootfs.diff_ids);
    await cache.measureTar(`chain-v1-${digestHex(chains[0]!)}`, async () => Readable.from([baseTar]));
    await cache.measureTar(`chain-v1-${digestHex(chains[1]!)}`, async () => Readable.from([upperTar]));
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    const inFlight = join(dir, 'blobs', 'sha256', digestHex(digestOf('in flight')));
    await writeFile(inFlight, 'in flight');

    expect((await prune(store)).bytesFreed).toBe(0);
    expect(await cache.get(b.layers[1]!.diffId, 'gzip')).toBeDefined();

    await store.refs.remove(refName('b:1'));
    const dry = await prune(store, { dryRun: true });
    expect(dry.bytesFreed).toBeGreaterThanOrEqual(upper.size);
    expect(await cache.get(b.layers[1]!.diffId, 'gzip')).toBeDefined();
    await prune(store);
    expect(await cache.get(b.layers[1]!.diffId, 'gzip')).toBeUndefined();
    expect((await cache.get(a.layers[0]!.diffId, 'gzip'))?.digest).toBe(lower.digest);
    expect(await names(join(dir, 'blobs', 'sha256'))).toEqual([digestHex(lower.digest), digestHex(digestOf('in flight'))].sort());
    expect(await names(join(dir, 'tars'))).toEqual([`chain-v1-${digestHex(chains[0]!)}.json`]);
  });
});
