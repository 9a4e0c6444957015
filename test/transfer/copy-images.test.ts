import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FerryError } from '../../src/errors.js';
import { VerifyDigest } from '../../src/io/verify-digest.js';
import type { Image } from '../../src/oci/image.js';
import type { ProgressEvent } from '../../src/oci/progress-event.js';
import { chainIds, openStore, StoreDestination, type Store } from '../../src/store/index.js';
import { BundleDestination } from '../../src/bundle/bundle-destination.js';
import type { CopyTarget, LayerPut, PutOptions } from '../../src/oci/destination.js';
import { copyImages } from '../../src/transfer/copy-images.js';
import { memoryImage } from '../helpers/memory-image.js';
import { buildTar } from '../helpers/tar-builder.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * The transfer engine with the store as destination and images held in memory as the source:
 * shared content goes once, a blob that arrives damaged is fetched again, a layer that never
 * arrives intact stops the copy with no name written, and a one-pass source's order is followed
 * without ever stacking a layer before its parent.
 */
let work: string;
let n = 0;
const base = buildTar([{ name: 'etc/base', body: 'base' }]);
const upper = buildTar([{ name: 'etc/upper', body: 'upper' }]);
const other = buildTar([{ name: 'etc/other', body: 'other' }]);

beforeAll(async () => {
  work = await makeTempDir('copy-images');
});
afterAll(async () => {
  await removeDir(work);
});

async function freshStore(): Promise<Store> {
  return openStore({ root: join(work, `store-${n++}`) });
}

/** The image with layer `index` delivering another layer's bytes the first `times` opens. */
function damagedAtFirst(image: Image, index: number, times: number): Image {
  let opens = 0;
  const wrong = memoryImage([other]).layers[0]!;
  const layers = image.layers.map((l, i) =>
    i !== index
      ? l
      : {
          ...l,
          blob: async () => {
            opens++;
            if (opens > times) return l.blob();
            // The other layer's bytes checked against this layer's digest: the stream fails at its end.
            return (await wrong.blob()).pipe(new VerifyDigest(l.descriptor.digest, { what: 'damaged on purpose' }));
          },
        },
  );
  return { ...image, layers };
}

describe('copyImages into the store', () => {
  it('copies two images sharing a base once each; the shared stack is unpacked once, config and names after it', async () => {
    const store = await freshStore();
    const a = memoryImage([base, upper], { ref: 'a:1' });
    const b = memoryImage([base, other], { ref: 'b:1' });
    const results = await copyImages([{ ref: a.ref, images: [a] }, { ref: b.ref, images: [b] }], new StoreDestination(store));
    expect(results.map((r) => [r.ref, r.layersWritten, r.layersPresent])).toEqual([
      ['docker.io/library/a:1', 2, 0],
      ['docker.io/library/b:1', 1, 1],
    ]);
    expect(a.opened.blob[0]! + b.opened.blob[0]!).toBe(1);
    expect((await store.refs.list()).map((e) => e.manifestDigest).sort()).toEqual([a.digest, b.digest].sort());
  });

  it('fetches a blob that arrived damaged again, and says so', async () => {
    const store = await freshStore();
    const image = damagedAtFirst(memoryImage([base, upper], { ref: 'flaky:1' }), 1, 1);
    const events: ProgressEvent[] = [];
    const [r] = await copyImages([{ ref: image.ref, images: [image] }], new StoreDestination(store), { onProgress: (e) => events.push(e) });
    expect(r!.layersWritten).toBe(2);
    expect(events.some((e) => e.kind === 'note' && /trying again \(2 of 3\)/.test(e.message))).toBe(true);
    expect((await store.refs.list()).map((e) => e.manifestDigest)).toEqual([image.digest]);
  });

  it('gives up after three damaged arrivals: DIGEST_MISMATCH, no name, nothing left in tmp/', async () => {
    const store = await freshStore();
    const image = damagedAtFirst(memoryImage([base, upper], { ref: 'broken:1' }), 1, 3);
    const err: unknown = await copyImages([{ ref: image.ref, images: [image] }], new StoreDestination(store)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).code).toBe('DIGEST_MISMATCH');
    expect(await store.refs.list()).toEqual([]);
    expect((await readdir(store.tmpDir)).filter((f) => !f.endsWith('-lease'))).toEqual([]);
  });

  it('takes layers in the source order it is given, but never a layer before its parent', async () => {
    const store = await freshStore();
    const image = memoryImage([base, upper, other], { ref: 'ordered:1', stored: 'tar' });
    const seen: number[] = [];
    const layers = image.layers.map((l, i) => ({ ...l, tar: async (): Promise<Readable> => (seen.push(i), l.tar()) }));
    const watched = { ...image, layers };
    // The source would hand over the top layer first: the engine still stacks bottom up.
    await copyImages([{ ref: watched.ref, images: [watched] }], new StoreDestination(store), { order: (_img, i) => [2, 0, 1][i]! });
    expect(seen).toEqual([0, 1, 2]);
    expect(await store.layers.has(chainIds(image.config.rootfs.diff_ids)[2]!)).toBe(true);
  });

  it('releases the destination (abort) when its commit fails, and passes the failure on', async () => {
    const store = await freshStore();
    const calls: string[] = [];
    class FailingCommit extends StoreDestination {
      override async commit(): Promise<void> {
        calls.push('commit');
        // The store's abort releases through commit: only the engine's own commit fails.
        if (calls.length === 1) throw new FerryError('NO_SPACE', 'commit failed on purpose');
        await super.commit();
      }
      override async abort(): Promise<void> {
        calls.push('abort');
        await super.abort();
      }
    }
    const image = memoryImage([base], { ref: 'failing:1' });
    await expect(copyImages([{ ref: image.ref, images: [image] }], new FailingCommit(store))).rejects.toThrow('commit failed on purpose');
    expect(calls.slice(0, 2)).toEqual(['commit', 'abort']);
    // The abort released the store's lease: another copy can take it at once.
    await copyImages([{ ref: image.ref, images: [image] }], new StoreDestination(store));
    expect((await store.refs.list()).map((r) => r.name)).toContain('docker.io/library/failing:1');
  });
});

describe('copyImages of many images', () => {
  it('starts a few images per copy slot at a time, not a whole wave of them at once, and copies them all', async () => {
    const images = Array.from({ length: 60 }, (_, i) => memoryImage([buildTar([{ name: `etc/image-${i}`, body: String(i) }])], { ref: `many-${i}:1` }));
    const keyed = new Set<Image>();
    let keyedAtFirstPut: number | undefined;
    class Watched extends BundleDestination {
      override layerKey(target: CopyTarget, image: Image, index: number): string {
        keyed.add(image);
        return super.layerKey(target, image, index);
      }
      override async putLayer(target: CopyTarget, image: Image, index: number, options: PutOptions): Promise<LayerPut> {
        keyedAtFirstPut ??= keyed.size;
        return super.putLayer(target, image, index, options);
      }
    }
    // A bundle plan: copies at once up to the engine's default of 4, so 16 images at a time.
    const destination = new Watched(undefined);
    await copyImages(
      images.map((image) => ({ ref: image.ref, images: [image] })),
      destination,
    );
    expect(keyedAtFirstPut).toBeLessThanOrEqual(16);
    expect(keyed.size).toBe(60);
    expect(destination.plan.header.images).toHaveLength(60);
  });
});
