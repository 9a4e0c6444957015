import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry } from '../helpers/ferry.js';
import { memoryImage } from '../helpers/memory-image.js';
import { startRegistry } from '../helpers/registry.js';
import { buildTar } from '../helpers/tar-builder.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { parseReference } from '../../src/oci/reference.js';
import { chainIds, openStore, openStoreImage } from '../../src/store/index.js';
import { importImage } from '../../src/verbs/import-image.js';

/**
 * tar-split end to end: a raw bundle's layers are unpacked and their tars dropped, yet the store
 * gives each one back byte for byte, so export from the store reproduces the original manifest
 * digests and push keeps the config digest.
 */
const run = promisify(execFile);
let work: string;
let layout: TestLayout;
let root: string;

const oci = (name: string): string => `oci:${layout.dir}:${name}`;

async function ferry(args: string[]): Promise<string> {
  const r = await runFerry(args);
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

async function sha256Of(stream: AsyncIterable<unknown>): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

beforeAll(async () => {
  work = await makeTempDir('e2e-tar-split');
  layout = await buildTestLayout(join(work, 'layout'));
  const bundle = join(work, 'raw.tar.zst');
  await ferry(['export', '-q', '-o', bundle, oci('app'), oci('tools')]);
  root = join(work, 'store');
  await ferry(['--root', root, 'import', bundle]);
});
afterAll(async () => {
  await removeDir(work);
});

describe('tar-split (raw bundle -> store -> original tars)', () => {
  it('every layer of the imported images reproduces to its diffId; fsck --deep agrees', async () => {
    const store = await openStore({ root });
    for (const name of ['app', 'tools']) {
      const image = await openStoreImage(store, name);
      expect(image.layers.length).toBeGreaterThan(0);
      for (const [i, layer] of image.layers.entries()) {
        const chainId = chainIds(image.layers.map((l) => l.diffId))[i]!;
        expect((await store.layers.meta(chainId))?.tarSplit, `${name} layer ${i}`).toBe('kept');
        expect(layer.stored).toBe('tar');
        expect(await sha256Of(await layer.tar())).toBe(layer.diffId);
      }
    }
    expect(await ferry(['--root', root, 'fsck', '--deep'])).toMatch(/0 problems/);
  });

  it('export from the store gives a bundle with the original manifest digests', async () => {
    const again = join(work, 'again.tar.zst');
    await ferry(['--root', root, 'export', '-q', '-o', again, 'app', 'tools']);
    const listed = JSON.parse(await ferry(['ls', '--json', again])) as unknown;
    const text = JSON.stringify(listed);
    expect(text).toContain(layout.images.app!.manifestDigest);
    expect(text).toContain(layout.images.tools!.manifestDigest);
    // And it imports into another store as the same image.
    const other = join(work, 'other');
    await ferry(['--root', other, 'import', again]);
    const images = JSON.parse(await ferry(['--root', other, 'images', '--json'])) as Array<{ name: string; manifestDigest: string }>;
    expect(images.find((i) => i.name === 'docker.io/library/app:latest')?.manifestDigest).toBe(layout.images.app!.manifestDigest);
  });

  it('a layer that writes a path twice is not reproducible: push regenerates it (new config), and still works', async () => {
    const dupRoot = join(work, 'dup-store');
    const store = await openStore({ root: dupRoot });
    const tar = buildTar([{ name: 'f', body: 'one' }, { name: 'f', body: 'two' }, { name: 'g', body: 'g' }]);
    const image = memoryImage([tar], { ref: 'docker.io/library/dup:1' });
    await importImage(store, image, { keepBlobs: false, ref: parseReference('docker.io/library/dup:1') });
    const dest = await startRegistry();
    try {
      const out = await ferry(['--root', dupRoot, 'push', 'docker.io/library/dup:1', `${dest.host}/dup:1`]);
      expect(out).toMatch(/->/); // a new manifest: the layer was written anew
      const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--config', '--raw', `docker://${dest.host}/dup:1`], { encoding: 'buffer' });
      expect(`sha256:${createHash('sha256').update(stdout).digest('hex')}`).not.toBe(image.configDigest);
      const copy = join(work, 'dup-copy');
      await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${dest.host}/dup:1`, `oci:${copy}:x`]);
    } finally {
      await dest.stop();
    }
  });

  it('a file changed in diff/ makes the reproduced tar fail with DIGEST_MISMATCH naming the layer', async () => {
    const store = await openStore({ root });
    const image = await openStoreImage(store, 'app');
    const top = chainIds(image.layers.map((l) => l.diffId)).at(-1)!;
    const files = (await run('find', [store.layers.diffDir(top), '-type', 'f', '-size', '+0'])).stdout.trim().split('\n');
    const victim = files[0]!;
    const { stdout: before } = await run('stat', ['-c', '%s', victim]);
    await writeFile(victim, Buffer.alloc(Number(before.trim()), 0x41));
    const err = await sha256Of(await image.layers.at(-1)!.tar()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(String((err as Error).message)).toContain(`layer ${image.layers.length - 1}`);
    const r = await runFerry(['--root', root, 'fsck', '--deep']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/layer-corrupt/);
  });
});
