import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { digestOf, parseDigest, type Digest } from '../../src/oci/digest.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient } from '../../src/registry/client.js';
import { resolveRemote } from '../../src/registry/remote-image.js';
import { runFerry } from '../helpers/ferry.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { APP_CONFIG, buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

let work: string;
let layout: TestLayout;
let registry: RunningRegistry;
let client: RegistryClient;

beforeAll(async () => {
  work = await makeTempDir('registry-pull');
  layout = await buildTestLayout(join(work, 'layout'));
  registry = await startRegistry();
  await pushTestImages(layout, registry);
  client = new RegistryClient();
});

afterAll(async () => {
  client?.close();
  await registry?.stop();
  await removeDir(work);
});

describe('resolveRemote against a real registry', () => {
  it('resolves an index to the requested platform, keeping the index bytes', async () => {
    const ref = parseReference(`${registry.host}/test/multi:latest`);
    const resolved = await resolveRemote(client, ref, [parsePlatform('linux/arm64')]);
    expect(resolved.images).toHaveLength(1);
    const image = resolved.images[0]!;
    const want = layout.images['multi@linux/arm64']!;
    expect(image.digest).toBe(want.manifestDigest);
    expect(image.configDigest).toBe(want.configDigest);
    expect(image.platform).toMatchObject({ os: 'linux', architecture: 'arm64' });
    expect(image.layers.map((l) => l.descriptor.digest)).toEqual(want.layers.map((l) => l.digest));
    expect(image.layers.map((l) => l.diffId)).toEqual(want.layers.map((l) => l.diffId));
    expect(resolved.index?.digest).toBe(layout.refs.multi);
    expect(digestOf(resolved.index!.raw)).toBe(layout.refs.multi);
    expect(digestOf(image.rawManifest)).toBe(image.digest);
  });

  it("resolves every platform with 'all'", async () => {
    const resolved = await resolveRemote(client, parseReference(`${registry.host}/test/multi`), 'all');
    expect(resolved.images.map((i) => i.digest).sort()).toEqual(
      [layout.images['multi@linux/amd64']!.manifestDigest, layout.images['multi@linux/arm64']!.manifestDigest].sort(),
    );
  });

  it('says PLATFORM_NOT_FOUND listing the available platforms', async () => {
    const err = await resolveRemote(client, parseReference(`${registry.host}/test/multi`), [parsePlatform('linux/s390x')]).catch((e: unknown) => e);
    expect(isFerryError(err, 'PLATFORM_NOT_FOUND')).toBe(true);
    expect((err as Error).message).toContain('linux/s390x');
    expect((err as Error).message).toContain('linux/amd64, linux/arm64');
  });

  it('streams layers verified, as blobs and as tars', async () => {
    const resolved = await resolveRemote(client, parseReference(`${registry.host}/test/app:latest`));
    const image = resolved.images[0]!;
    expect(resolved.index).toBeUndefined();
    expect(image.digest).toBe(layout.refs.app);
    expect(image.config.config?.Entrypoint).toEqual(APP_CONFIG.Entrypoint);
    for (const layer of image.layers) {
      const blob = await collect(await layer.blob());
      expect(sha256(blob)).toBe(layer.descriptor.digest);
      const tar = await collect(await layer.tar());
      expect(sha256(tar)).toBe(layer.diffId);
    }
  });

  it('gets a manifest by digest and checks it', async () => {
    const digest = parseDigest(layout.refs.app!);
    const got = await client.getManifest(parseReference(`${registry.host}/test/app@${digest}`));
    expect(got.digest).toBe(digest);
    expect(digestOf(got.raw)).toBe(digest);
    const head = await client.headManifest(parseReference(`${registry.host}/test/app:latest`));
    expect(head?.digest).toBe(digest);
    expect(head?.size).toBe(got.raw.length);
  });

  it('downloads a blob to a file atomically', async () => {
    const layer = layout.images.app!.layers[1]!;
    const path = join(work, 'blob');
    await client.downloadBlob({ registry: registry.host, repository: 'test/app' }, { digest: layer.digest as Digest, size: layer.size }, path);
    expect(sha256(await readFile(path))).toBe(layer.digest);
  });

  it('heads blobs and lists tags', async () => {
    const repo = { registry: registry.host, repository: 'test/app' };
    const layer = layout.images.app!.layers[0]!;
    expect(await client.headBlob(repo, layer.digest as Digest)).toBe(layer.size);
    expect(await client.headBlob(repo, digestOf('nothing'))).toBeUndefined();
    expect(await client.listTags(repo)).toEqual(['latest']);
  });

  it('says NOT_FOUND naming registry, repository, tag and status for a missing tag', async () => {
    const err = await client.getManifest(parseReference(`${registry.host}/test/app:nope`)).catch((e: unknown) => e);
    expect(isFerryError(err, 'NOT_FOUND')).toBe(true);
    const message = (err as Error).message;
    expect(message).toContain(`${registry.host}/test/app:nope`);
    expect(message).toContain('not found');
    expect(message).toContain('404');
  });

  it('says NOT_FOUND for a missing blob', async () => {
    const err = await client.openBlob({ registry: registry.host, repository: 'test/app' }, { digest: digestOf('absent'), size: 6 }).catch((e: unknown) => e);
    expect(isFerryError(err, 'NOT_FOUND')).toBe(true);
    expect((err as Error).message).toContain(digestOf('absent'));
  });
});

describe('ferry inspect', () => {
  it('--platform linux/arm64 of an index prints the arm64 manifest digest', async () => {
    const r = await runFerry(['inspect', '--platform', 'linux/arm64', `${registry.host}/test/multi:latest`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as Record<string, unknown>;
    const want = layout.images['multi@linux/arm64']!;
    expect(json.name).toBe(`${registry.host}/test/multi:latest`);
    expect(json.digest).toBe(want.manifestDigest);
    expect(json.platform).toBe('linux/arm64');
    expect(json.config).toBe(want.configDigest);
    expect(json.layers).toEqual(want.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })));
  });

  it('--raw writes the manifest bytes as served, the same bytes skopeo gets', async () => {
    const ref = `${registry.host}/test/multi:latest`;
    const raw = await runFerry(['inspect', '--raw', ref]);
    expect(raw.code).toBe(0);
    const { stdout: skopeoRaw } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'buffer' });
    expect(Buffer.from(raw.stdout, 'utf8').equals(skopeoRaw)).toBe(true);
    expect(sha256(skopeoRaw)).toBe(layout.refs.multi);

    const arm = await runFerry(['inspect', '--raw', '--platform', 'linux/arm64', ref]);
    expect(arm.code).toBe(0);
    expect(sha256(Buffer.from(arm.stdout, 'utf8'))).toBe(layout.images['multi@linux/arm64']!.manifestDigest);
  });

  it('prints the config fields of an image', async () => {
    const r = await runFerry(['inspect', `${registry.host}/test/app`]);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(json).toMatchObject({
      name: `${registry.host}/test/app:latest`,
      digest: layout.refs.app,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      env: APP_CONFIG.Env,
      entrypoint: APP_CONFIG.Entrypoint,
      cmd: APP_CONFIG.Cmd,
      workingDir: APP_CONFIG.WorkingDir,
      user: APP_CONFIG.User,
      created: '2024-01-01T00:00:00Z',
    });
  });

  it('inspects an index without --platform as the index, showing this host\'s image', async () => {
    const r = await runFerry(['inspect', `${registry.host}/test/multi`]);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as { digest: string; platforms: string[]; manifest: { digest: string } };
    expect(json.digest).toBe(layout.refs.multi);
    expect(json.platforms).toEqual(['linux/amd64', 'linux/arm64']);
    expect([layout.images['multi@linux/amd64']!.manifestDigest, layout.images['multi@linux/arm64']!.manifestDigest]).toContain(json.manifest.digest);
  });

  it('says a missing image is not found, exit 1, no stack trace', async () => {
    const r = await runFerry(['inspect', `${registry.host}/test/missing:1.0`]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ferry: get manifest 127\.0\.0\.1:\d+\/test\/missing:1\.0: not found \(HTTP 404/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('says PLATFORM_NOT_FOUND with the available platforms', async () => {
    const r = await runFerry(['inspect', '--platform', 'linux/ppc64le', `${registry.host}/test/multi`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no image for platform linux/ppc64le (available: linux/amd64, linux/arm64)');
  });
});
