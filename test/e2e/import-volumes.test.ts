import { createCipheriv } from 'node:crypto';
import { copyFile, mkdir, open, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex, type Digest } from '../../src/oci/digest.js';
import { runFerry } from '../helpers/ferry.js';
import { memoryImage, type MemoryImage } from '../helpers/memory-image.js';
import { buildTar } from '../helpers/tar-builder.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * Damaged volumes of a split bundle: a flipped byte, a truncated volume, a missing volume. The
 * import fails naming the volume (or the blob, where no .sha256 file can tell), no image from the
 * bundle becomes visible, and fsck finds the store sound; the intact copy then imports.
 */
const MiB = 1024 * 1024;
let work: string;
/** The intact volumes: kv.tar.zst.001 ... plus kv.tar.zst.sha256. */
let pristine: string;
let volumes: string[];

async function copyBundle(name: string): Promise<string> {
  const dir = join(work, name);
  await mkdir(dir);
  for (const f of await readdir(pristine)) await copyFile(join(pristine, f), join(dir, f));
  return join(dir, 'kv.tar.zst');
}

async function flipByte(path: string, at: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, at);
    one[0] = one[0]! ^ 0x10;
    await handle.write(one, 0, 1, at);
  } finally {
    await handle.close();
  }
}

/** Import must fail naming what is wrong; then nothing is visible and fsck is clean. */
async function expectRefused(bundle: string, names: RegExp): Promise<string> {
  const root = join(work, `store-${basename(join(bundle, '..'))}`);
  const r = await runFerry(['--root', root, 'import', bundle]);
  expect(r.code, r.stdout).toBe(1);
  expect(r.stderr).toMatch(names);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  const images = await runFerry(['--root', root, 'images', '--json']);
  expect(JSON.parse(images.stdout)).toEqual([]);
  const check = await runFerry(['--root', root, 'fsck']);
  expect(check.code, check.stdout).toBe(0);
  expect(check.stdout).toMatch(/0 problems/);
  return root;
}

beforeAll(async () => {
  work = await makeTempDir('import-volumes');
  // Pseudo-random bytes (AES-CTR of zeros, a fixed key per file): the bundle stays ~5 MiB, so 1 MiB
  // volumes give several; and the same bytes every run, so each flip hits the same place.
  const file = (name: string, bytes: number): { name: string; body: Buffer } => ({
    name,
    body: createCipheriv('aes-128-ctr', Buffer.alloc(16, name), Buffer.alloc(16)).update(Buffer.alloc(bytes)),
  });
  const base = buildTar([{ name: 'base/', type: 'dir' }, file('base/a', 2 * MiB)]);
  const images: Record<string, MemoryImage> = {
    one: memoryImage([base, buildTar([{ name: 'one/', type: 'dir' }, file('one/a', 2 * MiB)])]),
    two: memoryImage([base, buildTar([{ name: 'two/', type: 'dir' }, file('two/a', MiB)])]),
  };
  const layout = join(work, 'layout');
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  const manifests = [];
  for (const [name, img] of Object.entries(images)) {
    for (const [digest, bytes] of img.blobs) await writeFile(join(layout, 'blobs', 'sha256', digestHex(digest as Digest)), bytes);
    manifests.push({ mediaType: img.mediaType, digest: img.digest, size: img.rawManifest.length, annotations: { 'org.opencontainers.image.ref.name': name } });
  }
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
  pristine = join(work, 'pristine');
  await mkdir(pristine);
  const e = await runFerry(['export', '-q', '--split', '1M', '-o', join(pristine, 'kv.tar.zst'), `oci:${layout}:one`, `oci:${layout}:two`]);
  expect(e.code, e.stderr).toBe(0);
  volumes = (await readdir(pristine)).filter((f) => /\.\d{3}$/.test(f)).sort();
  expect(volumes.length).toBeGreaterThanOrEqual(4);
}, 60_000);
afterAll(async () => {
  await removeDir(work);
});

describe('ferry import of damaged volumes', () => {
  it('a flipped byte in volume 2 names kv.tar.zst.002', async () => {
    const bundle = await copyBundle('flipped');
    await flipByte(`${bundle}.002`, MiB / 2);
    await expectRefused(bundle, /kv\.tar\.zst\.002 is damaged: copy it again/);
  });

  it('a flipped byte in the last volume (after the layers below it were committed) names it, and no image is named', async () => {
    const bundle = await copyBundle('flipped-last');
    const last = volumes.at(-1)!;
    await flipByte(join(bundle, '..', last), 100);
    await expectRefused(bundle, new RegExp(`${last.replace(/\./g, '\\.')} is damaged`));
  });

  it('a flipped byte without the .sha256 file names the damaged blob or layer', async () => {
    const bundle = await copyBundle('flipped-nosum');
    await rm(`${bundle}.sha256`);
    await flipByte(`${bundle}.002`, MiB / 2);
    await expectRefused(bundle, /kv\.tar\.zst: blob sha256:[0-9a-f]{64} is damaged: its content hashes to sha256:[0-9a-f]{64}/);
  });

  it('a truncated volume names it', async () => {
    const bundle = await copyBundle('truncated');
    await truncate(`${bundle}.003`, 300_000);
    await expectRefused(bundle, /kv\.tar\.zst\.003 is damaged: copy it again/);
  });

  it('a truncated last volume without the .sha256 file fails the import too (naming the bundle)', async () => {
    const bundle = await copyBundle('truncated-nosum');
    await rm(`${bundle}.sha256`);
    await truncate(join(bundle, '..', volumes.at(-1)!), 1000);
    // Nothing can name the volume here (no checksums); the reader names the bundle and why.
    await expectRefused(bundle, /kv\.tar\.zst: cannot read the bundle: Stream ended in middle of compressed data frame/);
  });

  it('a missing volume names it before anything is written', async () => {
    const bundle = await copyBundle('missing');
    await rm(`${bundle}.003`);
    const root = await expectRefused(bundle, new RegExp(`kv\\.tar\\.zst\\.003 is missing: volume 3 of ${volumes.length}`));
    // Nothing at all was stored.
    expect(await readdir(join(root, 'blobs', 'sha256')).catch(() => [])).toEqual([]);
  });

  it('the intact copy imports into a store that saw the damaged ones', async () => {
    const root = join(work, 'store-flipped');
    const r = await runFerry(['--root', root, 'import', join(pristine, 'kv.tar.zst')]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse((await runFerry(['--root', root, 'images', '--json'])).stdout)).toHaveLength(2);
    expect((await runFerry(['--root', root, 'fsck'])).code).toBe(0);
  });
});
