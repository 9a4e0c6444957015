import { execFile } from 'node:child_process';
import { lstat, mkdir, readFile, readdir, readlink, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FerryError } from '../../src/errors.js';
import { chain } from '../../src/io/layer-forms.js';
import { markVerified, VerifyDigest } from '../../src/io/verify-digest.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import {
  chainIds,
  claimRootfs,
  fsck,
  inventory,
  openStore,
  openStoreImage,
  overlayMountOptions,
  prune,
  refName,
  resolveStoreRoot,
  rootfsPlan,
  shortLinkOf,
  type Store,
} from '../../src/store/index.js';
import { importImage } from '../../src/verbs/import-image.js';
import { ownerToken } from '../../src/store/owner.js';
import { buildTar } from '../helpers/tar-builder.js';
import { memoryImage } from '../helpers/memory-image.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
let base: string;
let store: Store;
let n = 0;

const baseTar = buildTar([
  { name: 'bin/', type: 'dir' },
  { name: 'bin/sh', body: '#!sh\n', mode: 0o755 },
  { name: 'etc/', type: 'dir' },
  { name: 'etc/passwd', body: 'root:x:0:0::/root:/bin/sh\n' },
  { name: 'etc/old', body: 'old' },
  { name: 'tmp/', type: 'dir', mode: 0o1777 },
]);
const upperTar = buildTar([
  { name: 'etc/.wh.old', body: '' },
  { name: 'etc/new', body: 'new' },
  { name: 'tmp/.wh.x', body: '' },
]);

async function consume(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );
}

beforeAll(async () => {
  base = await makeTempDir('store');
});
afterAll(async () => {
  await removeDir(base);
});
beforeEach(async () => {
  n++;
  store = await openStore({ root: join(base, `store${n}`) });
});

describe('store root', () => {
  it('resolves --root, then $FERRY_ROOT, then /var/lib/ferry for root, else $XDG_DATA_HOME/ferry', () => {
    expect(resolveStoreRoot({ root: 'rel/dir', env: { FERRY_ROOT: '/x' } })).toBe(join(process.cwd(), 'rel/dir'));
    expect(resolveStoreRoot({ env: { FERRY_ROOT: '/x' } })).toBe('/x');
    expect(resolveStoreRoot({ env: {}, uid: 0 })).toBe('/var/lib/ferry');
    expect(resolveStoreRoot({ env: { XDG_DATA_HOME: '/data' }, uid: 1000 })).toBe('/data/ferry');
    expect(resolveStoreRoot({ env: { HOME: '/home/u' }, uid: 1000 })).toMatch(/\.local\/share\/ferry$/);
  });

  it('creates the layout with private permissions', async () => {
    for (const d of ['blobs', 'layers', 'l', 'tmp', 'containers']) expect((await lstat(join(store.root, d))).mode & 0o777).toBe(0o700);
  });
});

describe('content store', () => {
  it('ingests, verifies and reads back a blob', async () => {
    const data = Buffer.from('hello blob');
    const d = digestOf(data);
    const r = await store.ingestBlob(Readable.from([data]), d, data.length);
    expect(r).toEqual({ digest: d, written: data.length, existed: false });
    expect(await consume(await store.blobs.open(d))).toEqual(data);
    expect(await store.blobs.list()).toEqual([d]);
    const again = await store.ingestBlob(Readable.from([data]), d, data.length);
    expect(again.existed).toBe(true);
  });

  it('an ingest with a wrong digest is refused and leaves nothing', async () => {
    const data = Buffer.from('real bytes');
    const claimed = digestOf('other bytes');
    const err = await store.ingestBlob(Readable.from([data]), claimed, data.length).catch((e: unknown) => e);
    expect((err as FerryError).code).toBe('DIGEST_MISMATCH');
    expect(await store.blobs.has(claimed)).toBe(false);
    expect(await store.blobs.list()).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('an ingest with a wrong size is refused and leaves nothing', async () => {
    const data = Buffer.from('twelve bytes');
    const err = await store.ingestBlob(Readable.from([data]), digestOf(data), 5).catch((e: unknown) => e);
    expect((err as FerryError).code).toBe('SIZE_MISMATCH');
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('a failing source stream leaves nothing', async () => {
    const broken = new Readable({
      read() {
        this.destroy(new Error('connection reset'));
      },
    });
    await expect(store.ingestBlob(broken, digestOf('x'), 1)).rejects.toThrow(/connection reset/);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('a source that failed before the ingest took it fails the ingest and leaves nothing', async () => {
    const failed = new Readable({ read() {} });
    failed.destroy(new Error('connection reset early'));
    await expect(store.ingestBlob(failed, digestOf('x'), 1)).rejects.toThrow(/connection reset early/);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('tmp/ entries of dead processes are swept at open; live ones stay', async () => {
    await mkdir(join(store.tmpDir, '999999999.1-abc-layer', 'diff'), { recursive: true });
    await writeFile(join(store.tmpDir, 'stray'), 'x');
    const own = `${process.pid}.${(await readFile(`/proc/${process.pid}/stat`, 'latin1')).split(') ')[1]!.split(' ')[19]}-live-blob`;
    await writeFile(join(store.tmpDir, own), 'x');
    const again = await openStore({ root: store.root });
    expect(await readdir(again.tmpDir)).toEqual([own]);
  });
});

describe('layers', () => {
  it('unpackLayer verifies the diffId before committing; a mismatch leaves nothing', async () => {
    const wrong = digestOf('not this tar');
    const err = await store.unpackLayer(Readable.from([baseTar]), wrong, undefined).catch((e: unknown) => e);
    expect((err as FerryError).code).toBe('DIGEST_MISMATCH');
    expect(await readdir(store.layers.dir)).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('a hostile layer leaves no staging dir and no layer', async () => {
    const evil = buildTar([{ name: 'ok', body: 'x' }, { name: '../../escape', body: 'x' }]);
    const err = await store.unpackLayer(Readable.from([evil]), digestOf(evil), undefined).catch((e: unknown) => e);
    expect((err as FerryError).code).toBe('UNSAFE_PATH');
    expect(await readdir(store.layers.dir)).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('unpacks once per chainId, with meta.json and a short l/ link', async () => {
    const diffId = digestOf(baseTar);
    const r = await store.unpackLayer(Readable.from([baseTar]), diffId, undefined);
    expect(r).toMatchObject({ chainId: diffId, skipped: false, size: baseTar.length });
    const meta = await store.layers.meta(diffId);
    expect(meta).toMatchObject({ chainId: diffId, diffId, parent: null, size: baseTar.length, link: shortLinkOf(diffId) });
    expect(await readlink(join(store.root, 'l', shortLinkOf(diffId)))).toBe(`../layers/${diffId.slice(7)}/diff`);
    const again = await store.unpackLayer(Readable.from([baseTar]), diffId, undefined);
    expect(again.skipped).toBe(true);
    // The upper layer on top: chainId = sha256(parent + " " + diffId), implied tmp/ keeps 1777.
    const upperId = digestOf(upperTar);
    const up = await store.unpackLayer(Readable.from([upperTar]), upperId, diffId);
    expect(up.chainId).toBe(chainIds([diffId, upperId])[1]);
    const upDiff = store.layers.diffDir(up.chainId);
    expect((await lstat(join(upDiff, 'tmp'))).mode & 0o7777).toBe(0o1777);
    expect((await lstat(join(upDiff, 'etc/old'))).isCharacterDevice()).toBe(true);
  });

  it('refuses a layer whose parent is not in the store', async () => {
    await expect(store.unpackLayer(Readable.from([upperTar]), digestOf(upperTar), digestOf('nope'))).rejects.toThrow(/not in the store/);
  });
});

describe('importImage', () => {
  it('imports an image: blobs, layers, ref last; a second import skips everything', async () => {
    const img = memoryImage([baseTar, upperTar], { ref: 'example.com/app:1' });
    const s1 = await importImage(store, img);
    expect(s1).toMatchObject({ layersUnpacked: 2, layersSkipped: 0, name: 'example.com/app:1', manifestDigest: img.digest });
    expect(img.opened.blob).toEqual([1, 1]);
    expect(img.opened.tar).toEqual([0, 0]);
    for (const d of [img.digest, img.configDigest, ...img.layers.map((l) => l.descriptor.digest)]) expect(await store.blobs.has(d)).toBe(true);
    const [entry] = await store.refs.find('example.com/app:1');
    expect(entry).toMatchObject({ manifestDigest: img.digest, platform: { os: 'linux', architecture: 'amd64' } });
    const meta = await store.layers.meta(chainIds(img.config.rootfs.diff_ids)[1]!);
    expect(meta?.compressedDigests).toEqual([img.layers[1]!.descriptor.digest]);

    const s2 = await importImage(store, img);
    expect(s2).toMatchObject({ layersUnpacked: 0, layersSkipped: 2, bytesWritten: 0 });
    expect(img.opened.blob).toEqual([1, 1]);
    expect(s2.bytesPresent).toBeGreaterThan(0);
  });

  it('a second image sharing the base layer unpacks only its own layer', async () => {
    await importImage(store, memoryImage([baseTar], { ref: 'base:1' }));
    const other = memoryImage([baseTar, upperTar], { ref: 'app:2', stored: 'tar' });
    const s = await importImage(store, other);
    expect(s).toMatchObject({ layersUnpacked: 1, layersSkipped: 1 });
    expect(other.opened.tar).toEqual([0, 1]);
  });

  it('a corrupt layer (tar does not match its diffId) fails the import; no ref is written', async () => {
    const img = memoryImage([baseTar], { ref: 'bad:1', stored: 'tar' });
    const lying = { ...img, layers: [{ ...img.layers[0]!, tar: async () => Readable.from([upperTar]) }] };
    await expect(importImage(store, lying)).rejects.toThrow(FerryError);
    expect(await store.refs.list()).toEqual([]);
    expect(await store.layers.list()).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('a layer tar whose own check the store relies on (markVerified) still fails the import when it does not match; nothing is kept', async () => {
    const img = memoryImage([baseTar], { ref: 'bad:2', stored: 'tar' });
    const diffId = img.layers[0]!.diffId;
    // The store does not hash a stream marked as verified against this diffId: the stream's own check must stop it.
    const checked = async (): Promise<Readable> => markVerified(chain(Readable.from([upperTar]), new VerifyDigest(diffId)), diffId);
    const lying = { ...img, layers: [{ ...img.layers[0]!, tar: checked }] };
    const err = await importImage(store, lying).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).code).toBe('DIGEST_MISMATCH');
    expect(await store.refs.list()).toEqual([]);
    expect(await store.layers.list()).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('a corrupt layer blob fails both the blob ingest and the unpack it feeds; nothing is left', async () => {
    const img = memoryImage([baseTar], { ref: 'badblob:1' });
    const other = memoryImage([upperTar]);
    const layer = img.layers[0]!;
    // The blob bytes of another layer under this layer's descriptor: digest and diffId both fail.
    const lying = { ...img, layers: [{ ...layer, blob: async () => (await other.layers[0]!.blob()) }] };
    await expect(importImage(store, lying)).rejects.toThrow(FerryError);
    expect(await store.blobs.has(layer.descriptor.digest)).toBe(false);
    expect(await store.layers.list()).toEqual([]);
    expect(await store.refs.list()).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('one name holds one image per platform', async () => {
    await importImage(store, memoryImage([baseTar], { ref: 'multi:1', architecture: 'amd64' }));
    await importImage(store, memoryImage([baseTar], { ref: 'multi:1', architecture: 'arm64' }));
    const entries = await store.refs.find(refName('multi:1'));
    expect(entries.map((e) => e.platform.architecture).sort()).toEqual(['amd64', 'arm64']);
  });

  it('openStoreImage reads the image back as an Image, layer blobs byte for byte', async () => {
    const img = memoryImage([baseTar, upperTar], { ref: 'roundtrip:1' });
    await importImage(store, img);
    const back = await openStoreImage(store, 'roundtrip:1');
    expect(back.digest).toBe(img.digest);
    expect(back.rawConfig).toEqual(img.rawConfig);
    expect(await consume(await back.layers[1]!.blob())).toEqual(img.blobs.get(img.layers[1]!.descriptor.digest));
    expect(await consume(await back.layers[0]!.tar())).toEqual(baseTar);
    // Kept only unpacked: the tar-split gives the original tar back.
    const unkeptTar = buildTar([{ name: 'only-unpacked', body: 'x' }]);
    const raw = memoryImage([unkeptTar], { ref: 'unkept:1' });
    await importImage(store, raw, { keepBlobs: false });
    const b2 = await openStoreImage(store, 'unkept:1');
    expect(b2.layers[0]!.stored).toBe('tar');
    expect(await consume(await b2.layers[0]!.tar())).toEqual(unkeptTar);
    // Unpacked only and not reproducible (a path written twice): a clear NOT_FOUND.
    const twice = memoryImage([buildTar([{ name: 'twice', body: 'x' }, { name: 'twice', body: 'y' }])], { ref: 'unkept:2' });
    await importImage(store, twice, { keepBlobs: false });
    const b3 = await openStoreImage(store, 'unkept:2');
    await expect(b3.layers[0]!.tar()).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('prune, fsck, inventory', () => {
  it('prune removes what no ref keeps, and reports bytes freed', async () => {
    const a = memoryImage([baseTar], { ref: 'a:1' });
    const b = memoryImage([baseTar, upperTar], { ref: 'b:1' });
    await importImage(store, a);
    await importImage(store, b);
    expect((await prune(store)).blobsRemoved).toEqual([]);
    await store.refs.remove(refName('b:1'));
    const dry = await prune(store, { dryRun: true });
    expect(dry.layersRemoved).toEqual([chainIds(b.config.rootfs.diff_ids)[1]]);
    const r = await prune(store);
    expect(r.layersRemoved).toHaveLength(1);
    expect(r.blobsRemoved.sort()).toEqual([b.digest, b.configDigest, b.layers[1]!.descriptor.digest].sort());
    expect(r.bytesFreed).toBeGreaterThan(0);
    expect(await store.layers.has(chainIds(a.config.rootfs.diff_ids)[0]!)).toBe(true);
    expect(await readdir(store.layers.linkDir)).toHaveLength(1);
    expect((await fsck(store)).problems).toEqual([]);
  });

  it('prune refuses while an import holds a lease', async () => {
    const lease = await store.lease();
    await expect(prune(store)).rejects.toMatchObject({ code: 'IN_USE' });
    await lease.release();
    await prune(store);
  });

  it('fsck finds a corrupt blob, an incomplete layer, a broken ref, tmp leftovers; repair fixes them', async () => {
    const img = memoryImage([baseTar, upperTar], { ref: 'f:1' });
    await importImage(store, img);
    expect((await fsck(store)).problems).toEqual([]);
    await writeFile(store.blobs.path(img.layers[0]!.descriptor.digest), 'bit rot');
    const top = chainIds(img.config.rootfs.diff_ids)[1]!;
    await rm(join(store.layers.layerDir(top), 'meta.json'));
    await mkdir(join(store.tmpDir, '999999999.1-dead-layer'));
    const found = await fsck(store);
    // The incomplete layer's l/ link dangles too.
    expect(found.problems.map((p) => p.kind).sort()).toEqual(['blob-corrupt', 'layer-incomplete', 'layer-link', 'ref-broken', 'tmp-leftover']);
    expect(found.problems.every((p) => !p.repaired)).toBe(true);
    const fixed = await fsck(store, { repair: true });
    expect(fixed.problems.every((p) => p.repaired)).toBe(true);
    expect((await fsck(store)).problems).toEqual([]);
    expect(await store.refs.list()).toEqual([]);
  });

  it('what a kill between two steps leaves is mended by the next open: layer without link, link without layer, refs/meta temp files', async () => {
    const img = memoryImage([baseTar, upperTar], { ref: 'k:1' });
    await importImage(store, img);
    const [bottom, top] = chainIds(img.config.rootfs.diff_ids) as [Digest, Digest];
    // Killed between the rename into layers/ and the symlink (commit), and between detach and unlink (prune).
    await rm(join(store.layers.linkDir, shortLinkOf(top)));
    await rm(store.layers.layerDir(bottom), { recursive: true });
    // The refs.json and meta.json rewrites go through tmp/ under an owner name: a dead writer's are swept.
    await writeFile(join(store.tmpDir, '999999999.1-0123456789ab-refs'), '{"schemaVersion":');
    await writeFile(join(store.tmpDir, '999999999.1-0123456789ac-meta'), '{');
    const before = (await fsck(store)).problems.map((p) => p.kind).sort();
    expect(before).toEqual(['layer-link', 'layer-link', 'layer-orphan', 'ref-broken', 'tmp-leftover', 'tmp-leftover']);
    const reopened = await openStore({ root: store.root });
    // The bottom layer is really gone (fsck --repair's business), but l/ and tmp/ are mended.
    expect((await fsck(reopened)).problems.map((p) => p.kind).sort()).toEqual(['layer-orphan', 'ref-broken']);
    expect(await readlink(join(store.layers.linkDir, shortLinkOf(top)))).toBe(`../layers/${top.slice(7)}/diff`);
    expect(await exists(join(store.layers.linkDir, shortLinkOf(bottom)))).toBe(false);
    expect(await readdir(store.tmpDir)).toEqual([]);
    // A store opened with nothing to mend does not take the lock (no lock file to wait on).
    await writeFile(join(store.root, 'lock'), `${ownerToken()}\n`);
    await openStore({ root: store.root, lockTimeoutMs: 200 });
    await rm(join(store.root, 'lock'));
  });

  it('refs.json and meta.json are rewritten through tmp/, never beside themselves', async () => {
    const img = memoryImage([baseTar], { ref: 'w:1' });
    await importImage(store, img);
    await store.layers.addCompressedDigest(img.config.rootfs.diff_ids[0]!, digestOf('another form'));
    expect((await readdir(store.root)).filter((n) => n.includes('.tmp'))).toEqual([]);
    expect(await readdir(store.layers.layerDir(img.config.rootfs.diff_ids[0]!))).toEqual(['diff', 'meta.json', 'tar-split.zst']);
  });

  it('a damaged refs.json is a clear STORE_ERROR; fsck --repair resets it', async () => {
    await writeFile(join(store.root, 'refs.json'), '{"schemaVersion": 1, "refs": [{"name": 1}]}');
    await expect(store.refs.list()).rejects.toMatchObject({ code: 'STORE_ERROR', message: /refs\.json: not a ferry refs file/ });
    const found = await fsck(store);
    expect(found.problems.map((p) => p.kind)).toEqual(['refs-unreadable']);
    await fsck(store, { repair: true });
    expect(await store.refs.list()).toEqual([]);
  });

  it('refs: set replaces the same name and platform, keeps others, and the file stays sorted', async () => {
    const a = memoryImage([baseTar], { ref: 'z:1' });
    const b = memoryImage([baseTar], { ref: 'a:1', labels: { v: '2' } });
    await importImage(store, a);
    await importImage(store, b);
    await importImage(store, memoryImage([baseTar], { ref: 'z:1', labels: { v: '3' } }));
    const refs = await store.refs.list();
    expect(refs.map((r) => r.name)).toEqual(['docker.io/library/a:1', 'docker.io/library/z:1']);
    expect(refs[1]!.manifestDigest).not.toBe(a.digest);
    expect(await store.refs.remove(refName('a:1'))).toHaveLength(1);
    expect((await store.refs.list()).map((r) => r.name)).toEqual(['docker.io/library/z:1']);
  });

  it('refs: a rewrite by another process, or an edit in place at the same size and mtime, is seen by a store already open', async () => {
    await importImage(store, memoryImage([baseTar], { ref: 'one:1' }));
    expect((await store.refs.list()).map((r) => r.name)).toEqual(['docker.io/library/one:1']);
    const other = await openStore({ root: store.root });
    await importImage(other, memoryImage([baseTar], { ref: 'two:1' }));
    expect((await store.refs.list()).map((r) => r.name)).toEqual(['docker.io/library/one:1', 'docker.io/library/two:1']);

    const path = join(store.root, 'refs.json');
    await utimes(path, 1_700_000_000, 1_700_000_000);
    expect(await store.refs.list()).toHaveLength(2);
    const before = await stat(path, { bigint: true });
    await writeFile(path, (await readFile(path, 'utf8')).replace('library/one:1', 'library/ona:1'));
    await utimes(path, 1_700_000_000, 1_700_000_000);
    const after = await stat(path, { bigint: true });
    expect([after.ino, after.size, after.mtimeNs]).toEqual([before.ino, before.size, before.mtimeNs]);
    expect((await store.refs.list()).map((r) => r.name)).toEqual(['docker.io/library/ona:1', 'docker.io/library/two:1']);

    // What one caller gets cannot change what the next one does.
    const got = await store.refs.list();
    got.pop();
    expect(() => Object.assign(got[0]!, { name: 'x' })).toThrow(TypeError);
    expect(() => Object.assign(got[0]!.platform, { os: 'x' })).toThrow(TypeError);
    expect((await store.refs.list()).map((r) => `${r.name} ${r.platform.os}`)).toEqual(['docker.io/library/ona:1 linux', 'docker.io/library/two:1 linux']);
  });

  it('inventory lists blobs, diffIds and layers in the shape export --since reads', async () => {
    const img = memoryImage([baseTar, upperTar], { ref: 'inv:1' });
    await importImage(store, img);
    const inv = await inventory(store);
    expect(inv.blobs).toContain(img.digest);
    expect(inv.diffIds.sort()).toEqual([...img.config.rootfs.diff_ids].sort());
    expect(inv.layers.map((l) => l.chainId).sort()).toEqual(chainIds(img.config.rootfs.diff_ids).sort());
    expect(inv.images).toEqual([{ name: 'docker.io/library/inv:1', manifestDigest: img.digest, platform: img.platform }]);
  });
});

describe('rootfs plan', () => {
  it('is a pure value: short lowerdirs top first, upper and work in the container dir', () => {
    const d = [digestOf('a'), digestOf('b')] as Digest[];
    const plan = rootfsPlan({ storeRoot: '/s', diffIds: d, containerId: 'c1' });
    const ids = chainIds(d);
    expect(plan).toEqual({
      cwd: '/s',
      lowerDirs: [`l/${shortLinkOf(ids[1]!)}`, `l/${shortLinkOf(ids[0]!)}`],
      chainIds: ids,
      upperDir: '/s/containers/c1/upper',
      workDir: '/s/containers/c1/work',
    });
    expect(overlayMountOptions(plan)).toBe(`lowerdir=${plan.lowerDirs.join(':')},upperdir=/s/containers/c1/upper,workdir=/s/containers/c1/work,index=off`);
    // 128 layers fit in one 4 KB page of mount options.
    const many = rootfsPlan({ storeRoot: '/var/lib/ferry', diffIds: Array.from({ length: 128 }, (_, i) => digestOf(String(i))), containerId: 'x'.repeat(64) });
    expect(overlayMountOptions(many).length).toBeLessThan(4096);
  });
});

describe('claimRootfs', () => {
  it('records the plan under the lock; prune keeps the layers of a container after rmi', async () => {
    const img = memoryImage([baseTar, upperTar], { ref: 'run:1' });
    await importImage(store, img);
    const plan = await claimRootfs(store, 'c1', img.config.rootfs.diff_ids);
    expect(JSON.parse(await readFile(join(store.containersDir, 'c1', 'rootfs.json'), 'utf8'))).toEqual(plan);
    await store.refs.remove(refName('run:1'));
    const r = await prune(store);
    expect(r.layersRemoved).toEqual([]);
    expect(r.blobsRemoved).toContain(img.digest);
    await expect(claimRootfs(store, 'c2', [digestOf('missing')])).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(claimRootfs(store, '../escape', img.config.rootfs.diff_ids)).rejects.toMatchObject({ code: 'USAGE' });
  });
});

describe('disk space', () => {
  let small: string;
  beforeAll(async () => {
    small = join(base, 'small');
    await mkdir(small);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', small]);
  });
  afterAll(async () => {
    await run('umount', [small]);
  });

  it('an import that cannot fit fails early with NO_SPACE, leaving the store as it was', async () => {
    const s = await openStore({ root: join(small, 'early') });
    const big = buildTar([{ name: 'big', body: Buffer.alloc(3 * 1024 * 1024, 1) }]);
    await expect(importImage(s, memoryImage([big], { ref: 'big:1', stored: 'tar' }))).rejects.toMatchObject({ code: 'NO_SPACE' });
    expect(await s.blobs.list()).toEqual([]);
    expect(await s.refs.list()).toEqual([]);
  });

  it('ENOSPC in the middle of an unpack gives NO_SPACE and removes the staging dir', async () => {
    const s = await openStore({ root: join(small, 'mid') });
    const big = buildTar([{ name: 'a', body: Buffer.alloc(2 * 1024 * 1024, 1) }, { name: 'b', body: Buffer.alloc(3 * 1024 * 1024, 2) }]);
    await expect(s.unpackLayer(Readable.from([big]), digestOf(big), undefined)).rejects.toMatchObject({ code: 'NO_SPACE' });
    expect(await readdir(s.tmpDir)).toEqual([]);
    expect(await readdir(s.layers.dir)).toEqual([]);
    expect(await exists(join(s.root, 'refs.json'))).toBe(false);
  });
});
