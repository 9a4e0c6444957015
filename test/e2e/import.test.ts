import { execFile, spawn } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FERRY_BIN, runFerry } from '../helpers/ferry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { fileTree } from '../helpers/tree.js';
import { openStore, overlayMountOptions, rootfsPlan } from '../../src/store/index.js';
import { digestHex, digestOf, type Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { chainIds } from '../../src/store/index.js';
import { memoryImage, type MemoryImage } from '../helpers/memory-image.js';
import { buildTar, extendedHeader } from '../helpers/tar-builder.js';

/** `ferry import` and the store commands, through bin/ferry as a user runs them (dist/ is built by `npm test`). */
const run = promisify(execFile);
let work: string;
let layout: TestLayout;

const oci = (name: string): string => `oci:${layout.dir}:${name}`;

async function ferry(root: string, args: string[], input?: Buffer): Promise<string> {
  const r = await runFerry(['--root', root, ...args], input === undefined ? {} : { input });
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}


beforeAll(async () => {
  work = await makeTempDir('e2e-import');
  layout = await buildTestLayout(join(work, 'layout'));
});
afterAll(async () => {
  await removeDir(work);
});

describe('ferry import', () => {
  it('imports a raw bundle; images, tag, inventory, rmi, prune, fsck work on the result', async () => {
    const bundle = join(work, 'raw.tar.zst');
    expect((await runFerry(['export', '-q', '-o', bundle, oci('app'), oci('tools')])).code).toBe(0);
    const root = join(work, 'store-raw');
    const out = await ferry(root, ['import', bundle]);
    expect(out).toMatch(/3 layers unpacked, 0 already present/);
    const images = JSON.parse(await ferry(root, ['images', '--json'])) as Array<{ name: string; manifestDigest: string }>;
    expect(images.map((i) => i.name).sort()).toEqual(['docker.io/library/app:latest', 'docker.io/library/tools:latest']);
    expect(images.find((i) => i.name.includes('app'))?.manifestDigest).toBe(layout.refs.app);
    // Importing again changes nothing.
    expect(await ferry(root, ['import', bundle])).toMatch(/0 B written, [\d.]+ [kM]B already present; 0 layers unpacked, 3 already present/);
    await ferry(root, ['tag', 'app', 'registry.example:5000/team/app:1.0']);
    expect(await ferry(root, ['images'])).toMatch(/registry\.example:5000\/team\/app:1\.0/);
    const invPath = join(work, 'inventory.json');
    await ferry(root, ['inventory', '-o', invPath]);
    const inv = JSON.parse(await readFile(invPath, 'utf8')) as { blobs: string[]; diffIds: string[] };
    expect(inv.blobs).toContain(layout.refs.app);
    expect(inv.diffIds).toContain(layout.images.base!.layers[0]!.diffId);
    expect(await ferry(root, ['rmi', 'tools'])).toMatch(/untagged: tools:latest[\s\S]*deleted: 1 layers/);
    expect(await ferry(root, ['fsck'])).toMatch(/0 problems/);
    expect(await ferry(root, ['prune', '--dry-run'])).toMatch(/would remove 0 layers, 0 blobs/);
  });

  it('imports an as-pulled multi-platform bundle from stdin, keeping the layer blobs', async () => {
    const bundle = join(work, 'pulled.tar.zst');
    expect((await runFerry(['export', '-q', '--layers', 'as-pulled', '--platform', 'all', '-o', bundle, oci('multi')])).code).toBe(0);
    const root = join(work, 'store-pulled');
    await ferry(root, ['import', '-'], await readFile(bundle));
    const images = JSON.parse(await ferry(root, ['images', '--json'])) as Array<{ platform: string }>;
    expect(images.map((i) => i.platform).sort()).toEqual(['linux/amd64', 'linux/arm64']);
    const store = await openStore({ root, readOnly: true });
    for (const image of Object.values(layout.images)) {
      if (!image.platform.startsWith('linux/arm64')) continue;
      for (const l of image.layers) expect(await store.blobs.has(l.digest as Digest)).toBe(true);
    }
    expect(await ferry(root, ['fsck'])).toMatch(/0 problems/);
  });

  it('imports docker-archive and OCI archive files, detected by content', async () => {
    const root = join(work, 'store-archives');
    const dockerTar = join(work, 'app-docker.tar');
    await run('skopeo', ['copy', '-q', `oci:${layout.dir}:app`, `docker-archive:${dockerTar}:example.com/app:docker`]);
    expect(await ferry(root, ['import', dockerTar])).toMatch(/imported example\.com\/app:docker/);
    const ociTar = join(work, 'tools-oci.tar');
    await run('skopeo', ['copy', '-q', `oci:${layout.dir}:tools`, `oci-archive:${ociTar}:example.com/tools:oci`]);
    expect(await ferry(root, ['import', ociTar])).toMatch(/example\.com\/tools:oci/);
    expect(await ferry(root, ['import', `oci:${layout.dir}:base`])).toMatch(/imported base/);
    expect(await ferry(root, ['fsck'])).toMatch(/0 problems/);
  });

  it('a delta bundle made against the store inventory imports on top; without the base it is refused clearly', async () => {
    const root = join(work, 'store-delta');
    const base = join(work, 'base.tar.zst');
    expect((await runFerry(['export', '-q', '-o', base, oci('base')])).code).toBe(0);
    await ferry(root, ['import', base]);
    const inv = join(work, 'delta-inventory.json');
    await ferry(root, ['inventory', '-o', inv]);
    const delta = join(work, 'delta.tar.zst');
    const e = await runFerry(['export', '-q', '--since', inv, '-o', delta, oci('app')]);
    expect(e.code, e.stderr).toBe(0);
    expect(await ferry(root, ['import', delta])).toMatch(/1 layers unpacked, 1 already present/);
    expect(await ferry(root, ['fsck'])).toMatch(/0 problems/);
    const r = await runFerry(['--root', join(work, 'store-empty'), 'import', delta]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not in this delta bundle and not in the store/);
  });

  it('one layer on top of two different parents is unpacked once per stack', async () => {
    const a = buildTar([{ name: 'a', body: 'a' }]);
    const b = buildTar([{ name: 'b', body: 'b' }]);
    const top = buildTar([{ name: 'etc/', type: 'dir' }, { name: 'etc/top', body: 'top' }, { name: '.wh.a', body: '' }, { name: '.wh.b', body: '' }]);
    const images: Record<string, MemoryImage> = { one: memoryImage([a, top], { stored: 'tar' }), two: memoryImage([b, top], { stored: 'tar' }) };
    const dir = join(work, 'two-parents');
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    const manifests = [];
    for (const [name, img] of Object.entries(images)) {
      for (const [digest, bytes] of img.blobs) await writeFile(join(dir, 'blobs', 'sha256', digestHex(digest as Digest)), bytes);
      manifests.push({ mediaType: img.mediaType, digest: img.digest, size: img.rawManifest.length, annotations: { 'org.opencontainers.image.ref.name': name } });
    }
    await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
    const bundle = join(work, 'two-parents.tar.zst');
    const e = await runFerry(['export', '-q', '-o', bundle, `oci:${dir}:one`, `oci:${dir}:two`]);
    expect(e.code, e.stderr).toBe(0);
    const root = join(work, 'store-two-parents');
    expect(await ferry(root, ['import', bundle])).toMatch(/4 layers unpacked/);
    const store = await openStore({ root, readOnly: true });
    for (const img of Object.values(images)) {
      const top = chainIds(img.config.rootfs.diff_ids)[1]!;
      expect(await readFile(join(store.layers.diffDir(top), 'etc/top'), 'utf8')).toBe('top');
    }
    expect(await ferry(root, ['fsck'])).toMatch(/0 problems/);
  });

  it('ends with a summary (images, bytes written, bytes already present, time); one plain line per layer off a TTY', async () => {
    const bundle = join(work, 'summary.tar.zst');
    expect((await runFerry(['export', '-q', '-o', bundle, oci('app'), oci('tools')])).code).toBe(0);
    const root = join(work, 'store-summary');
    const r = await runFerry(['--root', root, 'import', bundle]);
    expect(r.code, r.stderr).toBe(0);
    const last = r.stdout.trim().split('\n').at(-1);
    expect(last).toMatch(/^imported 2 images in \d+\.\d s: [\d.]+ [kM]B written, 0 B already present; 3 layers unpacked, 0 already present$/);
    // Progress goes to stderr: without a TTY, one finished line per layer and no escape codes.
    const layerLines = r.stderr.split('\n').filter((l) => /^layer [0-9a-f]{12}: [\d.]+ (B|kB|MB) \((done|[\d.]+ (B|kB|MB)\/s)\)$/.test(l));
    expect(layerLines, r.stderr).toHaveLength(3);
    expect(r.stderr).not.toContain('\x1b[');
    const again = JSON.parse(await ferry(root, ['import', '--json', bundle])) as { bytesWritten: number; bytesPresent: number; seconds: number; layersSkipped: number };
    expect(again.bytesWritten).toBe(0);
    expect(again.layersSkipped).toBe(3);
    // The layers' tars and the manifests and configs: all there already.
    const layers = new Map([layout.images.app!, layout.images.tools!].flatMap((i) => i.layers.map((l) => [l.diffId, l.size] as const)));
    expect(again.bytesPresent).toBeGreaterThan([...layers.values()].reduce((a, b) => a + b, 0));
    expect(again.seconds).toBeGreaterThan(0);
    // Archives end with the same summary.
    const archive = join(work, 'summary-docker.tar');
    await run('skopeo', ['copy', '-q', `oci:${layout.dir}:tools`, `docker-archive:${archive}:example.com/tools:s`]);
    const a = await ferry(root, ['import', archive]);
    expect(a.trim().split('\n').at(-1)).toMatch(/^imported 1 image in \d+\.\d s: [\d.]+ (B|kB) written, [\d.]+ [kM]B already present; 0 layers unpacked, 2 already present$/);
  });

  it('shows live per-layer progress on a TTY (script(1) gives it one)', async () => {
    const bundle = join(work, 'summary.tar.zst');
    const root = join(work, 'store-tty');
    const command = [process.execPath, FERRY_BIN, '--root', root, 'import', bundle].map((a) => `'${a}'`).join(' ');
    const { stdout } = await run('script', ['-qefc', command, '/dev/null'], { env: { ...process.env, TERM: 'xterm' } });
    // A live line per layer in flight (bytes / total, speed), redrawn: cursor up, clear below.
    expect(stdout).toMatch(/layer [0-9a-f]{12}: [\d.]+ (B|kB|MB) \/ [\d.]+ (kB|MB) [\d.]+ (B|kB|MB)\/s/);
    expect(stdout).toMatch(/\x1b\[\d+A\x1b\[J/);
    expect(stdout).toMatch(/imported 2 images in \d+\.\d s: /);
    expect(JSON.parse(await ferry(root, ['images', '--json']))).toHaveLength(2);
  });

  it('a bundle signed with another key is refused before anything is named', async () => {
    const keys = join(work, 'keys');
    await mkdir(keys);
    expect((await runFerry(['keygen', '-o', join(keys, 'a')])).code).toBe(0);
    expect((await runFerry(['keygen', '-o', join(keys, 'b')])).code).toBe(0);
    const priv = 'a.pem';
    const pubB = 'b.pub.pem';
    const bundle = join(work, 'signed.tar.zst');
    expect((await runFerry(['export', '-q', '--sign', join(keys, priv), '-o', bundle, oci('base')])).code).toBe(0);
    const root = join(work, 'store-signed');
    const r = await runFerry(['--root', root, 'import', '--key', join(keys, pubB), bundle]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/signature/);
    expect(JSON.parse(await ferry(root, ['images', '--json']))).toEqual([]);
  });

  it('a damaged bundle fails the import and names no image', async () => {
    const bundle = join(work, 'raw.tar.zst');
    const bytes = await readFile(bundle);
    const damaged = Buffer.from(bytes);
    damaged[Math.floor(bytes.length * 0.8)]! ^= 0xff;
    const path = join(work, 'damaged.tar.zst');
    await writeFile(path, damaged);
    const root = join(work, 'store-damaged');
    const r = await runFerry(['--root', root, 'import', path]);
    expect(r.code).toBe(1);
    expect(JSON.parse(await ferry(root, ['images', '--json']))).toEqual([]);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('the overlay mount of an imported busybox image equals umoci unpack of the same image', async () => {
    const root = join(work, 'store-raw');
    const store = await openStore({ root, readOnly: true });
    const config = JSON.parse((await readFile(store.blobs.path(layout.images.app!.configDigest as Digest))).toString()) as { rootfs: { diff_ids: Digest[] } };
    const plan = rootfsPlan({ storeRoot: root, diffIds: config.rootfs.diff_ids, containerId: 'cmp' });
    const merged = join(work, 'merged');
    await mkdir(merged);
    await run('mount', ['-t', 'overlay', 'overlay', '-o', overlayMountOptions(plan).split(',upperdir=')[0]!, merged], { cwd: root });
    try {
      const bundle = join(work, 'umoci-app');
      await run('umoci', ['unpack', '--image', `${layout.dir}:app`, bundle]);
      const ours = await fileTree(merged);
      const theirs = await fileTree(join(bundle, 'rootfs'));
      expect(Object.keys(theirs).length).toBeGreaterThan(20);
      expect(ours).toEqual(theirs);
    } finally {
      await run('umount', [merged]);
    }
  });
});

/** An OCI layout holding one image `evil` whose only layer is `blob` (the diffId is not checked before the attack lands). */
async function oneLayerLayout(dir: string, blob: Buffer, mediaType: string, diffId: string): Promise<Digest> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (bytes: Buffer): Promise<Digest> => {
    const digest = digestOf(bytes);
    await writeFile(join(blobs, digestHex(digest)), bytes);
    return digest;
  };
  const layer = await put(blob);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: await put(config), size: config.length },
      layers: [{ mediaType, digest: layer, size: blob.length }],
    }),
  );
  const manifestDigest = await put(manifest);
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.ociManifest, digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'evil' } }] }),
  );
  return layer;
}

/** `ferry import` in a child process under /usr/bin/time: its exit code, stderr and peak RSS. */
async function importMeasured(root: string, source: string): Promise<{ code: number; stderr: string; maxRssMiB: number }> {
  const child = spawn('/usr/bin/time', ['-f', 'ferry-max-rss-kb=%M', process.execPath, FERRY_BIN, '--root', root, 'import', source], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? -1));
  });
  const kb = /ferry-max-rss-kb=(\d+)/.exec(stderr);
  expect(kb, stderr).not.toBeNull();
  return { code, stderr, maxRssMiB: Number(kb![1]) / 1024 };
}

describe('ferry import: memory bombs stay bounded (peak RSS of the import process)', () => {
  const LIMIT_MIB = 300;

  it('PAX flood: 48 MiB of PAX headers (each under 1 MiB) before one entry is refused within 300 MB, naming the layer', async () => {
    // Distinct keys in consecutive headers all merged into one entry's records: ~13 bytes of tar
    // each became a Map entry, a string and a Buffer (6.2 GB from a 28 MB gzip layer).
    const headers: Buffer[] = [];
    for (let h = 0; h < 48; h++) {
      const records: string[] = [];
      let size = 0;
      for (let i = 0; size < 1024 * 1024 - 64; i++) {
        const body = ` k${h}.${i}=\n`;
        const record = `${body.length + String(body.length + 2).length}${body}`;
        records.push(record);
        size += record.length;
      }
      headers.push(extendedHeader('x', Buffer.from(records.join(''))));
    }
    const tar = Buffer.concat([...headers, buildTar([{ name: 'f', body: 'x' }])]);
    const dir = join(work, 'pax-flood');
    const layer = await oneLayerLayout(dir, gzipSync(tar, { level: 1 }), MediaType.ociLayerGzip, digestOf(tar));
    const r = await importMeasured(join(work, 'store-pax-flood'), `oci:${dir}:evil`);
    expect(r.maxRssMiB, r.stderr).toBeLessThan(LIMIT_MIB);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(layer);
    // Refused at the first header, for its ~80,000 records (a flood of fewer, larger records meets the byte cap instead).
    expect(r.stderr).toMatch(/invalid tar: \d+ PAX records for one entry are over the 10000-record limit/);
  });

  it('zstd window bomb: a 64 KB layer whose frame declares a 2 GiB window is refused within 300 MB, naming the layer', async () => {
    // One real zstd frame (the zstd CLI decodes it with --long=31): window 2^31, then RLE blocks
    // of 128 KiB of zeros, 2 GiB in all, that a decoder allowed 2^31 fills its window with.
    const parts = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3])];
    const blocks = 16_400;
    for (let i = 0; i < blocks; i++) {
      const h = (i === blocks - 1 ? 1 : 0) | (1 << 1) | (128 * 1024 * 8);
      parts.push(Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, 0]));
    }
    const frame = Buffer.concat(parts);
    const dir = join(work, 'zstd-window');
    const layer = await oneLayerLayout(dir, frame, MediaType.ociLayerZstd, `sha256:${'0'.repeat(64)}`);
    const listed = await run('zstd', ['-lv', join(dir, 'blobs', 'sha256', digestHex(layer))]);
    expect(listed.stdout).toMatch(/Window Size: 2\.00 GiB/);
    const r = await importMeasured(join(work, 'store-zstd-window'), `oci:${dir}:evil`);
    expect(r.maxRssMiB, r.stderr).toBeLessThan(LIMIT_MIB);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(layer);
    expect(r.stderr).toMatch(/zstd frame needs a 2 GiB window \(2\^31\), over the 128 MiB \(2\^27\)/);
  });
});
