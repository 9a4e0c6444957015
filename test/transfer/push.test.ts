import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openDockerArchive, openOciLayout } from '../../src/archive/index.js';
import { writeBundle } from '../../src/verbs/export.js';
import { MediaType } from '../../src/oci/media-types.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient } from '../../src/registry/client.js';
import { CompressedLayerCache } from '../../src/store/compressed-cache.js';
import { pushImages } from '../../src/verbs/push.js';
import { pushBundle } from '../../src/verbs/push-bundle.js';
import { parseDestination, reroot } from '../../src/transfer/push-target.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * The push engine against a real registry behind the fault proxy: a bundle pushed straight from
 * its stream (raw layers compressed on the way) survives refused and dropped uploads, and
 * images from an archive go up compressed with zstd, rewritten, with a cache making the second
 * push free. Every result is read back and verified by skopeo and umoci.
 */
const run = promisify(execFile);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let work: string;
let layout: TestLayout;
let registry: RunningRegistry;
let proxy: FaultProxy;
let client: RegistryClient;

beforeAll(async () => {
  work = await makeTempDir('transfer-push');
  layout = await buildTestLayout(join(work, 'layout'), { bigLayerBytes: 3 * 1024 * 1024 });
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.host);
  client = new RegistryClient({ retry: { baseDelayMs: 20, maxDelayMs: 200 } });
});

beforeEach(() => {
  proxy.setFaults([]);
  proxy.requests.length = 0;
});

afterAll(async () => {
  client?.close();
  await proxy?.stop();
  await registry?.stop();
  await removeDir(work);
});

/** skopeo copy (which verifies every blob) + umoci unpack; returns the rootfs path. */
async function unpack(ref: string, name: string, recompress = false): Promise<string> {
  const dir = join(work, `copy-${name}`);
  // This umoci reads no zstd layers: skopeo recompresses them with gzip on the way.
  const gzip = recompress ? ['--dest-compress', '--dest-compress-format', 'gzip'] : [];
  await run('skopeo', ['copy', '--quiet', ...gzip, '--src-tls-verify=false', `docker://${ref}`, `oci:${dir}:x`]);
  await run('umoci', ['unpack', '--rootless', '--image', `${dir}:x`, join(work, `unpacked-${name}`)]);
  return join(work, `unpacked-${name}`, 'rootfs');
}

async function rawManifest(ref: string): Promise<Buffer> {
  return (await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'buffer' })).stdout;
}

describe('push from a bundle stream', () => {
  it('streams a raw bundle into the registry through uploads cut mid-body, refused and dropped; every image verifies', async () => {
    const sources = [];
    for (const name of ['app', 'big', 'multi']) {
      const resolved = await openOciLayout(layout.dir, name, 'all');
      for (const image of resolved.images) sources.push({ ref: `docker.io/library/${name}:1`, image });
    }
    const bundle = join(work, 'raw.tar.zst');
    await writeBundle(sources, bundle, {});
    proxy.setFaults([
      // Layers come by depth: the first upload is the 1 MB base layer, broken off after 64 kB.
      { kind: 'cut', match: /^PATCH /, afterBytes: 64 * 1024 },
      { kind: 'status', match: /^PATCH /, status: 500 },
      { kind: 'drop', match: /^PATCH /, afterBytes: 0 },
      { kind: 'status', match: /^PUT .*[?&]digest=/, status: 503 },
      { kind: 'status', match: /^PUT .*\/manifests\//, status: 500 },
    ]);
    const destination = parseDestination(`${proxy.host}/mirror`);
    const results = await pushBundle(client, bundle, { retarget: (r) => reroot(parseReference(r), destination), jobs: 2, spoolDir: join(work, 'spool') });
    expect(proxy.pendingFaults()).toEqual([]);
    expect(results.map((r) => r.target).sort()).toEqual(['app', 'big', 'multi'].map((n) => `${proxy.host}/mirror/library/${n}:1`));
    // gzip of the raw tars: node's gzip at the default level, as the test images were made, so here even the digests match.
    const app = results.find((r) => r.target.includes('/app:'))!;
    expect(app.digest).toBe(layout.refs.app);
    const multi = results.find((r) => r.target.includes('/multi:'))!;
    expect(multi.images.map((i) => i.digest).sort()).toEqual([layout.images['multi@linux/amd64']!.manifestDigest, layout.images['multi@linux/arm64']!.manifestDigest].sort());
    const bigRoot = await unpack(`${registry.host}/mirror/library/big:1`, 'big');
    const bigFile = await readFile(join(bigRoot, 'data', 'big.bin'));
    expect(bigFile.length).toBe(3 * 1024 * 1024);
    const appRoot = await unpack(`${registry.host}/mirror/library/app:1`, 'app');
    expect(await readFile(join(appRoot, 'opt/app/run.sh'), 'utf8')).toContain('app says');
    expect((await readdirSafe(join(work, 'spool')))).toEqual([]);

    // Pushed again: the earlier push's manifests name the compressed layers, so nothing is compressed or sent.
    proxy.requests.length = 0;
    const second = await pushBundle(client, bundle, { retarget: (r) => reroot(parseReference(r), destination) });
    expect(second.map((r) => r.uploaded)).toEqual([0, 0, 0]);
    expect(second.map((r) => r.digest).sort()).toEqual(results.map((r) => r.digest).sort());
    expect(proxy.requests.filter((r) => r.method === 'PATCH' || r.method === 'POST')).toEqual([]);
  });
});

/** The bundle file as a stream that pauses 1.1 s twice while its layers flow (past its header, manifests and configs). */
function slowly(path: string): Readable {
  let chunks = 0;
  return createReadStream(path, { highWaterMark: 16 * 1024 }).pipe(
    new Transform({
      transform(chunk: Buffer, _enc, done): void {
        chunks++;
        if (chunks === 3 || chunks === 6) setTimeout(() => done(null, chunk), 1100);
        else done(null, chunk);
      },
    }),
  );
}

async function readdirSafe(dir: string): Promise<string[]> {
  const { readdir } = await import('node:fs/promises');
  return readdir(dir).catch(() => []);
}

describe('push of images with uncompressed layers', () => {
  it('compresses docker-archive layers with zstd into a new OCI manifest, retries a refused upload, and a cache makes the second push send nothing', async () => {
    const archive = join(work, 'app-docker.tar');
    await run('skopeo', ['copy', '--quiet', `oci:${layout.dir}:app`, `docker-archive:${archive}:app:1`]);
    const opened = await openDockerArchive(archive);
    const image = opened.images[0]!;
    expect(image.layers.every((l) => l.stored === 'tar')).toBe(true);
    proxy.setFaults([{ kind: 'status', match: /^PATCH /, status: 502 }]);
    const target = parseReference(`${proxy.host}/zstd/app:1`);
    const [first] = await pushImages(client, [{ target, images: [image] }], { compression: 'zstd' });
    expect(proxy.pendingFaults()).toEqual([]);
    expect(first!.images[0]!.rewritten).toBe(true);
    expect(first!.images[0]!.sourceDigest).toBe(image.digest);
    const manifest = JSON.parse((await rawManifest(`${registry.host}/zstd/app:1`)).toString()) as { mediaType: string; layers: Array<{ mediaType: string }> };
    expect(manifest.mediaType).toBe(MediaType.ociManifest);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([MediaType.ociLayerZstd, MediaType.ociLayerZstd]);
    expect(sha256(await rawManifest(`${registry.host}/zstd/app:1`))).toBe(first!.digest);
    const root = await unpack(`${registry.host}/zstd/app:1`, 'zstd-app', true);
    expect(await readFile(join(root, 'etc/app/app.conf'), 'utf8')).toBe('mode=app\n');

    // Through a cache of compressed forms: the first push fills it, the second finds every blob present.
    const cache = new CompressedLayerCache(join(work, 'cache'));
    const target2 = parseReference(`${proxy.host}/cached/app:1`);
    const [a] = await pushImages(client, [{ target: target2, images: [image] }], { compression: 'gzip', cache });
    const [b] = await pushImages(client, [{ target: target2, images: [image] }], { compression: 'gzip', cache });
    // (the gzip blobs may be mounted: the bundle test pushed the same layers, compressed alike)
    expect(a!.uploaded + a!.mounted + a!.present).toBe(3);
    expect(b!.uploaded).toBe(0);
    expect(b!.present).toBe(3);
    expect(b!.digest).toBe(a!.digest);
    await opened.close();
  });

  it('pushes a multi-platform layout image as is: the index and every manifest keep their digests; a second repository mounts', async () => {
    const resolved = await openOciLayout(layout.dir, 'multi', 'all');
    const [r] = await pushImages(client, [{ target: parseReference(`${proxy.host}/as-is/multi:1`), images: resolved.images, ...(resolved.index ? { index: resolved.index } : {}) }]);
    expect(r!.digest).toBe(layout.refs.multi);
    expect(r!.index?.rewritten).toBe(false);
    const [again] = await pushImages(client, [{ target: parseReference(`${proxy.host}/other/multi:1`), images: resolved.images, ...(resolved.index ? { index: resolved.index } : {}) }]);
    expect(again!.mounted).toBeGreaterThan(0);
    expect(again!.uploaded).toBe(0);
    expect(sha256(await rawManifest(`${registry.host}/other/multi:1`))).toBe(layout.refs.multi);
  });
});

describe('push from a bundle stream with token auth', () => {
  it('streams uploads with push-scoped tokens, renewed as they expire during the push', async () => {
    const secured = await startRegistry({ auth: 'token', tokenTtlSeconds: 1 });
    const authed = new RegistryClient({
      retry: { baseDelayMs: 20, maxDelayMs: 200 },
      credentials: () => Promise.resolve({ username: secured.username!, password: secured.password! }),
    });
    try {
      const resolved = await openOciLayout(layout.dir, 'app', 'all');
      const bundle = join(work, 'token.tar.zst');
      await writeBundle(resolved.images.map((image) => ({ ref: 'docker.io/library/app:1', image })), bundle, {});
      // Let the 1 s token run out while the layers flow: the later uploads need a new one.
      const [result] = await pushBundle(authed, slowly(bundle), { retarget: (r) => reroot(parseReference(r), parseDestination(`${secured.host}/t`)) });
      expect(result!.digest).toBe(layout.refs.app);
      expect(secured.tokenRequests!.length).toBeGreaterThan(1);
      const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--creds', `${secured.username}:${secured.password}`, `docker://${secured.host}/t/library/app:1`]);
      expect((JSON.parse(stdout) as { Digest: string }).Digest).toBe(layout.refs.app);
    } finally {
      authed.close();
      await secured.stop();
    }
  });
});
