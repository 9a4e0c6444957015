import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPrivateKey } from '../../src/bundle/sign.js';
import { type BundleSource } from '../../src/bundle/write-bundle.js';
import { writeBundle } from '../../src/verbs/export.js';
import { runFerry } from '../helpers/ferry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { layoutSources, refOf, run } from './fixtures.js';

// These run bin/ferry.js, which runs dist/: `npm test` (or `npx tsc -p .`) builds it first.
const MiB = 1024 * 1024;
let dir: string;
let layout: TestLayout;
let sources: BundleSource[];
let bundle: string;

beforeAll(async () => {
  dir = await makeTempDir('bundle-cli');
  layout = await buildTestLayout(join(dir, 'layout'), { bigLayerBytes: 20 * MiB });
  sources = await layoutSources(layout.dir, ['base', 'app', 'tools', 'multi']);
  bundle = join(dir, 'b.tar.zst');
  await writeBundle(sources, bundle);
});

afterAll(async () => {
  await removeDir(dir);
});

describe('ferry ls', () => {
  it('lists images, shared layers, totals and the memory to decompress', async () => {
    const r = await runFerry(['ls', bundle]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('ferry bundle v1');
    expect(r.stdout).toMatch(/IMAGE\s+PLATFORM\s+MANIFEST\s+LAYERS\s+SIZE/);
    expect(r.stdout).toContain(`${refOf('app')}`);
    expect(r.stdout).toMatch(/multi:1\s+linux\/arm64/);
    expect(r.stdout).toContain('shared layers (stored once):');
    expect(r.stdout).toContain(layout.images.base!.layers[0]!.diffId.slice(7, 19));
    expect(r.stdout).toMatch(/total: 5 images, \d+ blobs/);
    expect(r.stdout).toContain('window 2^27, needs 129 MiB of memory; plain `tar --zstd -xf` can open it');
  });

  it('--json', async () => {
    const r = await runFerry(['ls', '--json', bundle]);
    expect(r.code).toBe(0);
    const d = JSON.parse(r.stdout) as { images: Array<{ ref: string; manifestDigest: string }>; sharedLayers: Array<{ blob: string; images: string[] }>; window: { plainZstd: boolean }; totals: { compressedBytes: number } };
    expect(d.images.find((i) => i.ref === refOf('app'))!.manifestDigest).toBe(layout.images.app!.manifestDigest);
    expect(d.sharedLayers.find((s) => s.blob === layout.images.base!.layers[0]!.diffId)!.images).toHaveLength(5);
    expect(d.window.plainZstd).toBe(true);
    expect(d.totals.compressedBytes).toBe((await stat(bundle)).size);
  });

  it('says what a delta requires, and what a big window needs', async () => {
    const delta = join(dir, 'delta.tar.zst');
    const base = layout.images.base!.layers[0]!;
    await writeBundle(sources.filter((s) => s.ref === refOf('app')), delta, { exclude: new Set([base.digest]), windowLog: 30 });
    const r = await runFerry(['ls', delta]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`delta: requires 1 layer (`);
    expect(r.stdout).toContain(base.digest);
    expect(r.stdout).toContain('plain tools need `zstd -d --long=30`');
  });

  it('reads a bundle from stdin', async () => {
    const r = await runFerry(['ls', '-'], { input: await readFile(bundle) });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^stdin: ferry bundle v1 .* read from stdin/);
    expect(r.stdout).toContain(refOf('tools'));
  });

  it('names a missing bundle', async () => {
    const r = await runFerry(['ls', join(dir, 'nope.tar.zst')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ferry: bundle .*nope.tar.zst: no such file/);
  });
});

describe('ferry verify', () => {
  it('passes a good bundle', async () => {
    const r = await runFerry(['verify', bundle]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/OK: \d+ blobs .* match their digests, 5 images complete, unsigned/);
  });

  it('names a damaged volume and exits 1', async () => {
    const vols = join(dir, 'vols');
    await run('mkdir', ['-p', vols]);
    const bigSources = await layoutSources(layout.dir, ['big']);
    await writeBundle(bigSources, { path: join(vols, 'big.tar.zst'), split: 4 * MiB }, { level: 1 });
    expect((await runFerry(['verify', join(vols, 'big.tar.zst.001')])).code).toBe(0);
    const handle = await open(join(vols, 'big.tar.zst.003'), 'r+');
    await handle.write(Buffer.from([0x55, 0xaa]), 0, 2, 1000);
    await handle.close();
    const r = await runFerry(['verify', join(vols, 'big.tar.zst')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ferry: big.tar.zst.003 is damaged: copy it again');
  });

  it('checks the signature with --key; keys from ferry keygen or openssl genpkey', async () => {
    const keygen = await runFerry(['keygen', '-o', join(dir, 'ours')]);
    expect(keygen.code).toBe(0);
    expect((await stat(join(dir, 'ours.pem'))).mode & 0o777).toBe(0o600);
    const again = await runFerry(['keygen', '-o', join(dir, 'ours')]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('already exists');

    await run('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', join(dir, 'theirs.pem')]);
    await run('openssl', ['pkey', '-in', join(dir, 'theirs.pem'), '-pubout', '-out', join(dir, 'theirs.pub.pem')]);
    const signed = join(dir, 'signed.tar.zst');
    await writeBundle(sources.filter((s) => s.ref === refOf('tools')), signed, { signKey: await loadPrivateKey(join(dir, 'theirs.pem')) });

    const good = await runFerry(['verify', '--key', join(dir, 'theirs.pub.pem'), signed]);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain('signature verified');
    const noKey = await runFerry(['verify', signed]);
    expect(noKey.stdout).toContain('signed (not checked: no --key)');
    const wrong = await runFerry(['verify', '--key', join(dir, 'ours.pub.pem'), signed]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('the signature does not match ferry-bundle.json');
    const unsigned = await runFerry(['verify', '--key', join(dir, 'ours.pub.pem'), bundle]);
    expect(unsigned.code).toBe(1);
    expect(unsigned.stderr).toContain('is not signed');
  });
});
