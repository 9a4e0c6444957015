import { createHash } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { chainIdOf, fsck, openStore, openStoreImageByDigest, type Store } from '../../src/store/index.js';
import { importImage } from '../../src/verbs/import-image.js';
import { memoryImage } from '../helpers/memory-image.js';
import { buildTar, type TarSpec } from '../helpers/tar-builder.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/** tar-split: the store gives back each layer tar byte for byte from diff/ and the recorded skeleton. */
let base: string;
let store: Store;
let n = 0;

beforeAll(async () => {
  base = await makeTempDir('tar-split');
});
afterAll(async () => {
  await removeDir(base);
});

async function freshStore(): Promise<Store> {
  n++;
  store = await openStore({ root: join(base, `store${n}`) });
  return store;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

async function reproduce(chainId: Digest): Promise<Buffer> {
  const open = await store.layers.openTar(chainId, `layer ${chainId}`);
  expect(open, 'a split was kept').toBeDefined();
  return readAll(open!());
}

const long = `${'d'.repeat(120)}/${'f'.repeat(90)}`;
const baseEntries: TarSpec[] = [
  { name: './', type: 'dir', mode: 0o755 },
  { name: 'bin/', type: 'dir' },
  { name: 'bin/tool', body: 'tool body\n'.repeat(100), mode: 0o4755 },
  { name: 'bin/link', type: 'hardlink', linkname: 'bin/tool' },
  { name: 'bin/sym', type: 'symlink', linkname: '/bin/tool' },
  { name: 'etc/', type: 'dir', pax: { mtime: '1700000000.123456789', 'SCHILY.xattr.user.note': 'hello' } },
  { name: 'etc/empty', body: '' },
  { name: 'etc/with-xattr', body: 'x', xattrs: { 'user.k': Buffer.from([0, 1, 2, 255]) } },
  { name: long, body: 'long name via PAX' },
  { name: `gnu/${'g'.repeat(150)}`, body: 'long name via GNU L', gnuLong: true },
  { name: 'dev/fifo', type: 'fifo' },
  { name: 'odd-size', body: Buffer.alloc(513, 7) },
];

describe('tar-split', () => {
  it('reproduces a layer byte for byte, trailing zeros included; whiteouts and opaque dirs in an upper layer', async () => {
    await freshStore();
    const lower = buildTar(baseEntries, { trailing: Buffer.alloc(4096) });
    const upper = buildTar([
      { name: 'etc/', type: 'dir' },
      { name: 'etc/.wh..wh..opq', body: '' },
      { name: 'etc/new', body: 'new' },
      { name: 'bin/.wh.sym', body: '' },
      { name: '.wh..wh.plnk/junk', body: 'aufs metadata body is kept raw' },
      { name: 'v7dir/', typeflag: '0', body: '' },
    ]);
    const lowerId = digestOf(lower);
    const r1 = await store.unpackLayer(Readable.from([lower]), lowerId, undefined);
    const r2 = await store.unpackLayer(Readable.from([upper]), digestOf(upper), r1.chainId);
    expect((await store.layers.meta(r1.chainId))?.tarSplit).toBe('kept');
    expect((await reproduce(r1.chainId)).equals(lower)).toBe(true);
    expect((await reproduce(r2.chainId)).equals(upper)).toBe(true);
  });

  it('layers without end-of-archive blocks (tar-split\'s test data has one: they occur in the wild) reproduce byte for byte; fsck --deep agrees', async () => {
    await freshStore();
    const none = buildTar(baseEntries, { noEnd: true });
    const one = Buffer.concat([buildTar([{ name: 'top', body: 'only one zero block after me' }], { noEnd: true }), Buffer.alloc(512)]);
    const r1 = await store.unpackLayer(Readable.from([none]), digestOf(none), undefined);
    const r2 = await store.unpackLayer(Readable.from([one]), digestOf(one), r1.chainId);
    expect((await store.layers.meta(r1.chainId))?.tarSplit).toBe('kept');
    expect((await reproduce(r1.chainId)).equals(none)).toBe(true);
    expect((await reproduce(r2.chainId)).equals(one)).toBe(true);
    expect((await fsck(store, { deep: true })).problems).toEqual([]);
  });

  it('a split too big to keep in memory (over 1 MiB of headers) streams to its file and reproduces byte for byte; written twice after that, no split is left', async () => {
    await freshStore();
    // 1200 entries of ~1 KiB each (header, padding): past the in-memory limit of the recorder.
    const many: TarSpec[] = Array.from({ length: 1200 }, (_, i) => ({ name: `f/${String(i).padStart(5, '0')}`, body: `body ${i}\n` }));
    const tar = buildTar([{ name: 'f/', type: 'dir' }, ...many]);
    const r = await store.unpackLayer(Readable.from([tar]), digestOf(tar), undefined);
    expect((await store.layers.meta(r.chainId))?.tarSplit).toBe('kept');
    expect((await reproduce(r.chainId)).equals(tar)).toBe(true);
    const twice = buildTar([{ name: 'f/', type: 'dir' }, ...many, { name: 'f/00000', body: 'again' }]);
    const r2 = await store.unpackLayer(Readable.from([twice]), digestOf(twice), undefined);
    expect((await store.layers.meta(r2.chainId))?.tarSplit).toBe('not-reproducible');
    expect(await store.layers.openTar(r2.chainId, 'x')).toBeUndefined();
    expect((await fsck(store, { deep: true })).problems).toEqual([]);
  });

  it('a path written twice (or removed by a later entry) marks the layer not reproducible, and writes no split', async () => {
    await freshStore();
    for (const entries of [
      [{ name: 'a', body: 'first' }, { name: 'a', body: 'second' }],
      [{ name: 'd/', type: 'dir' as const }, { name: 'd/f', body: 'x' }, { name: 'd', body: 'now a file' }],
      [{ name: 'a', body: 'first' }, { name: 'b', body: 'b' }, { name: 'a', type: 'hardlink' as const, linkname: 'b' }],
    ]) {
      const tar = buildTar(entries);
      const r = await store.unpackLayer(Readable.from([tar]), digestOf(tar), undefined);
      const meta = await store.layers.meta(r.chainId);
      expect(meta?.tarSplit).toBe('not-reproducible');
      expect(meta?.tarSplitWhy).toMatch(/written twice|replaced|removed/);
      expect(await store.layers.openTar(r.chainId, 'x')).toBeUndefined();
    }
  });

  it('a store image without blobs reads its layers from the split; a changed file fails with DIGEST_MISMATCH naming the layer', async () => {
    await freshStore();
    const tar = buildTar(baseEntries);
    const image = memoryImage([tar]);
    await importImage(store, image, { keepBlobs: false });
    const opened = await openStoreImageByDigest(store, image.digest);
    const layer = opened.layers[0]!;
    expect(layer.stored).toBe('tar');
    expect(layer.tarSize).toBe(tar.length);
    const got = await readAll(await layer.tar());
    expect(createHash('sha256').update(got).digest('hex')).toBe(digestOf(tar).slice(7));
    // Same size, other bytes: only the digest can tell.
    const chainId = chainIdOf(undefined, digestOf(tar));
    await writeFile(join(store.layers.diffDir(chainId), 'etc/with-xattr'), 'y');
    const err = await readAll(await layer.tar()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(String((err as Error).message)).toContain('layer 0');
    // Another size: the reproduction stops at that file.
    await writeFile(join(store.layers.diffDir(chainId), 'etc/with-xattr'), 'yy');
    const err2 = await readAll(await layer.tar()).catch((e: unknown) => e);
    expect(err2).toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(String((err2 as Error).message)).toMatch(/layer 0.*etc\/with-xattr.*2 bytes, not 1/);
  });

  it('fsck: a lost split is a problem (repair marks the layer not reproducible); --deep finds a changed file', async () => {
    await freshStore();
    const a = buildTar([{ name: 'a', body: 'aaaa' }]);
    const b = buildTar([{ name: 'b', body: 'bbbb' }]);
    const ra = await store.unpackLayer(Readable.from([a]), digestOf(a), undefined);
    const rb = await store.unpackLayer(Readable.from([b]), digestOf(b), undefined);
    expect((await fsck(store, { deep: true })).problems).toEqual([]);
    await rm(store.layers.tarSplitPath(ra.chainId));
    await writeFile(join(store.layers.diffDir(rb.chainId), 'b'), 'BBBB');
    expect((await fsck(store)).problems.map((p) => p.kind)).toEqual(['layer-split']);
    const deep = await fsck(store, { deep: true });
    expect(deep.problems.map((p) => [p.kind, p.subject]).sort()).toEqual([['layer-corrupt', rb.chainId], ['layer-split', ra.chainId]]);
    expect(deep.problems.find((p) => p.kind === 'layer-corrupt')!.message).toMatch(/digest mismatch/);
    const repaired = await fsck(store, { deep: true, repair: true });
    expect(repaired.problems.every((p) => p.repaired)).toBe(true);
    expect((await store.layers.meta(ra.chainId))?.tarSplit).toBe('not-reproducible');
    expect(await store.layers.meta(rb.chainId)).toBeUndefined();
    expect((await fsck(store, { deep: true })).problems).toEqual([]);
  });
});
