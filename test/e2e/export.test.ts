import { execFile } from 'node:child_process';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FERRY_BIN, runFerry } from '../helpers/ferry.js';
import { countBlobGets, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);

let work: string;
let layout: TestLayout;
let registry: RunningRegistry;
let proxy: FaultProxy;
let env: Record<string, string>;

const ref = (name: string, host = registry.host): string => `${host}/test/${name}:latest`;

beforeAll(async () => {
  work = await makeTempDir('e2e-export');
  layout = await buildTestLayout(join(work, 'layout'));
  registry = await startRegistry();
  await pushTestImages(layout, registry);
  proxy = await startFaultProxy(registry.host);
  env = { FERRY_CACHE_DIR: join(work, 'cache'), FERRY_ROOT: join(work, 'store') };
});

afterAll(async () => {
  await proxy.stop();
  await registry.stop();
  await removeDir(work);
});

describe('ferry export from a registry', () => {
  it('writes one bundle for three images sharing a base, one of them in two platforms', async () => {
    const out = join(work, 'three.tar.zst');
    const r = await runFerry(['export', '-q', '--platform', 'linux/amd64,linux/arm64', '-o', out, ref('app'), ref('tools'), ref('multi')], { env: { ...env, FERRY_CACHE_DIR: join(work, 'cache-three') } });
    expect(r.code, r.stderr).toBe(0);
    const ls = await runFerry(['ls', '--json', out]);
    expect(ls.code, ls.stderr).toBe(0);
    const listing = JSON.parse(ls.stdout) as { images: Array<{ ref: string; platform: string; manifestDigest: string }> };
    const seen = listing.images.map((i) => `${i.ref} ${i.platform}`).sort();
    // app and tools are host-platform only; multi has both platforms.
    expect(seen).toContain(`${ref('multi')} linux/arm64`);
    expect(seen).toContain(`${ref('multi')} linux/amd64`);
    expect(listing.images.find((i) => i.ref === ref('app'))?.manifestDigest).toBe(layout.refs.app);
    // The base layer is in the stream exactly once.
    const { stdout } = await run('tar', ['--zstd', '-tf', out]);
    const base = layout.images.base!.layers[0]!.diffId.slice(7);
    expect(stdout.split('\n').filter((n) => n === `blobs/sha256/${base}`)).toHaveLength(1);
    // Standard tools open it: skopeo reads every image, umoci unpacks it.
    const dir = join(work, 'three-extracted');
    await run('mkdir', ['-p', dir]);
    await run('tar', ['--zstd', '-xf', out, '-C', dir]);
    await run('skopeo', ['inspect', `oci:${dir}:${ref('app')}`]);
    await run('umoci', ['unpack', '--rootless', '--image', `${dir}:${ref('app')}`, join(work, 'app-bundle')]);
    const rootfs = join(work, 'app-bundle', 'rootfs');
    await expect(stat(join(rootfs, 'etc/app/removed.conf'))).rejects.toThrow();
    await expect(readdir(join(rootfs, 'data/old'))).resolves.not.toContain('old.txt');
  });

  it('gives byte-identical bundles from two exports of the same images', async () => {
    const a = join(work, 'a.tar.zst');
    const b = join(work, 'b.tar.zst');
    for (const out of [a, b]) {
      const r = await runFerry(['export', '-q', '-o', out, ref('app'), ref('base')], { env });
      expect(r.code, r.stderr).toBe(0);
    }
    expect((await readFile(a)).equals(await readFile(b))).toBe(true);
  });

  it('reads from a bundle definition file', async () => {
    const def = join(work, 'def.yaml');
    await writeFile(def, `name: t\nimages:\n  - ${ref('app')}\n  - ref: ${ref('multi')}\n    platforms: [linux/arm64]\noptions:\n  layers: as-pulled\n`);
    const out = join(work, 'def.tar.zst');
    const r = await runFerry(['export', '-q', '-f', def, '-o', out], { env });
    expect(r.code, r.stderr).toBe(0);
    const ls = JSON.parse((await runFerry(['ls', '--json', out])).stdout) as { images: Array<{ ref: string; platform: string }>; layers?: unknown };
    expect(ls.images.map((i) => `${i.ref} ${i.platform}`).sort()).toEqual([`${ref('app')} ${layout.images.app!.platform}`, `${ref('multi')} linux/arm64`].sort());
  });

  it('an interrupted export run again pulls only the blobs it lacked', async () => {
    const cache = join(work, 'cache-resume');
    const app = layout.images.app!;
    const second = app.layers[1]!.digest;
    // The second layer's blob keeps failing: the first run dies after pulling the others.
    proxy.setFaults([{ kind: 'status', match: new RegExp(`GET /v2/test/app/blobs/${second}`), status: 500, times: 100 }]);
    const first = await runFerry(['export', '-q', '-j', '1', '-o', join(work, 'resume.tar.zst'), ref('app', proxy.host)], { env: { ...env, FERRY_CACHE_DIR: cache } });
    expect(first.code).toBe(1);
    expect(first.stderr).toContain(second);
    expect(first.stderr).not.toMatch(/\n\s+at /);
    proxy.setFaults([]);
    const before = await registry.log();
    const baseBlob = app.layers[0]!.digest;
    const baseGetsBefore = countBlobGets(before, baseBlob);
    const secondGetsBefore = countBlobGets(before, second);
    const again = await runFerry(['export', '-q', '-o', join(work, 'resume.tar.zst'), ref('app', proxy.host)], { env: { ...env, FERRY_CACHE_DIR: cache } });
    expect(again.code, again.stderr).toBe(0);
    const after = await registry.log();
    expect(countBlobGets(after, baseBlob)).toBe(baseGetsBefore);
    expect(countBlobGets(after, second)).toBe(secondGetsBefore + 1);
  });

  it('splits into volumes that sha256sum -c accepts', async () => {
    const out = join(work, 'split.tar.zst');
    const r = await runFerry(['export', '-q', '--split', '1M', '--level', '1', '-o', out, ref('app')], { env });
    expect(r.code, r.stderr).toBe(0);
    const files = (await readdir(work)).filter((f) => f.startsWith('split.tar.zst.')).sort();
    expect(files[0]).toBe('split.tar.zst.001');
    expect(files).toContain('split.tar.zst.sha256');
    for (const f of files.filter((x) => /\.\d{3}$/.test(x))) expect((await stat(join(work, f))).size).toBeLessThanOrEqual(1024 * 1024);
    await run('sha256sum', ['-c', 'split.tar.zst.sha256'], { cwd: work });
    const v = await runFerry(['verify', `${out}.001`]);
    expect(v.code, v.stderr).toBe(0);
  });

  it('says a missing image is not found, without a stack trace', async () => {
    const r = await runFerry(['export', '-q', '-o', join(work, 'x.tar.zst'), `${registry.host}/test/nope:1`], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not found/i);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('export memory', () => {
  async function peakRss(size: number): Promise<number> {
    const dir = join(work, `big-${size}`);
    await buildTestLayout(dir, { bigLayerBytes: size });
    const { stderr } = await run('/usr/bin/time', ['-f', 'RSS=%M', process.execPath, FERRY_BIN, 'export', '-q', '--window-log', '24', '-o', join(work, `big-${size}.tar.zst`), `oci:${dir}:big`], {
      env: { ...process.env, ...env },
      maxBuffer: 1 << 20,
    });
    const m = /RSS=(\d+)/.exec(stderr);
    expect(m, stderr).not.toBeNull();
    return Number(m![1]) * 1024;
  }

  // Memory is bounded by the zstd window, never by the layer: a 64 MiB layer does not fill the
  // default 128 MiB window (2^27), so it peaks lower than any larger layer (257 vs 333 MB measured).
  // A 16 MiB window (2^24) is filled by both, which isolates what this test is about: no layer is
  // buffered anywhere in pull, measure, tar or compression.
  it('stays flat as the layer grows from 64 MiB to 1 GiB', async () => {
    const small = await peakRss(64 * 1024 * 1024);
    const large = await peakRss(1024 * 1024 * 1024);
    expect(large / small).toBeLessThan(1.2);
  }, 600_000);
});

describe('export through a faulty network', () => {
  it('fetches a blob again when a byte was flipped on the way, and never keeps the bad copy', async () => {
    const app = layout.images.app!;
    const blob = app.layers[0]!.digest;
    proxy.setFaults([{ kind: 'flip', match: new RegExp(`GET /v2/test/app/blobs/${blob}`), offset: 100 }]);
    const out = join(work, 'flip.tar.zst');
    const r = await runFerry(['export', '-o', out, ref('app', proxy.host)], { env: { ...env, FERRY_CACHE_DIR: join(work, 'cache-flip') } });
    expect(r.code, r.stderr).toBe(0);
    expect(proxy.pendingFaults()).toHaveLength(0);
    expect(r.stderr).toMatch(/digest mismatch/);
    const v = await runFerry(['verify', out]);
    expect(v.code, v.stderr).toBe(0);
  });
});

describe('export from the local store', () => {
  it('takes a bare reference from the store first, and --pull goes to the registry', async () => {
    const root = join(work, 'store-for-export');
    const first = join(work, 'to-store.tar.zst');
    expect((await runFerry(['export', '-q', '-o', first, ref('app')], { env })).code).toBe(0);
    const imp = await runFerry(['import', first], { env: { ...env, FERRY_ROOT: root } });
    expect(imp.code, imp.stderr).toBe(0);
    const before = countBlobGets(await registry.log(), layout.images.app!.layers[1]!.digest);
    const manifestsBefore = (await registry.log()).split('\n').filter((l) => l.includes('/manifests/')).length;
    const out = join(work, 'from-store.tar.zst');
    const r = await runFerry(['export', '-o', out, ref('app')], { env: { ...env, FERRY_ROOT: root, FERRY_CACHE_DIR: join(work, 'cache-store') } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('taken from the local store');
    const log = await registry.log();
    expect(log.split('\n').filter((l) => l.includes('/manifests/')).length).toBe(manifestsBefore);
    expect(countBlobGets(log, layout.images.app!.layers[1]!.digest)).toBe(before);
    // The bundle from the store imports elsewhere and holds the same image identity.
    const ls = JSON.parse((await runFerry(['ls', '--json', out])).stdout) as { images: Array<{ ref: string }> };
    expect(ls.images.map((i) => i.ref)).toEqual([ref('app')]);
    const other = join(work, 'store-other');
    const imp2 = await runFerry(['import', out], { env: { ...env, FERRY_ROOT: other } });
    expect(imp2.code, imp2.stderr).toBe(0);
    const pulled = await runFerry(['export', '--pull', '-q', '-o', join(work, 'pulled.tar.zst'), ref('app')], { env: { ...env, FERRY_ROOT: root } });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect((await registry.log()).split('\n').filter((l) => l.includes('/manifests/')).length).toBeGreaterThan(manifestsBefore);
  });
});
