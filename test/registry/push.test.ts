import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import type { Image } from '../../src/oci/image.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient, type PushBlobResult } from '../../src/registry/client.js';
import { resolveRemote } from '../../src/registry/remote-image.js';
import { pushImage, pushResolved } from '../../src/verbs/push.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

async function skopeoInspect(ref: string, creds?: string): Promise<{ raw: Buffer; digest: string }> {
  const args = ['--tls-verify=false', ...(creds ? ['--creds', creds] : [])];
  const { stdout: raw } = await run('skopeo', ['inspect', '--raw', ...args, `docker://${ref}`], { encoding: 'buffer' });
  const { stdout } = await run('skopeo', ['inspect', ...args, `docker://${ref}`]);
  return { raw, digest: (JSON.parse(stdout) as { Digest: string }).Digest };
}

let work: string;
let layout: TestLayout;
let source: RunningRegistry;
let dest: RunningRegistry;
let proxy: FaultProxy;
let client: RegistryClient;

beforeAll(async () => {
  work = await makeTempDir('registry-push');
  layout = await buildTestLayout(join(work, 'layout'), { bigLayerBytes: 3 * 1024 * 1024 });
  [source, dest] = await Promise.all([startRegistry(), startRegistry()]);
  await pushTestImages(layout, source);
  proxy = await startFaultProxy(dest.host);
  client = new RegistryClient({ retry: { baseDelayMs: 20, maxDelayMs: 200 } });
});

beforeEach(() => {
  proxy.setFaults([]);
  proxy.requests.length = 0;
});

afterAll(async () => {
  client?.close();
  await proxy?.stop();
  await source?.stop();
  await dest?.stop();
  await removeDir(work);
});

async function sourceImage(name: string): Promise<Image> {
  return (await resolveRemote(client, parseReference(`${source.host}/test/${name}:latest`))).images[0]!;
}

function recorder(): { results: Record<string, PushBlobResult>; onBlob: (d: Digest, r: PushBlobResult) => void } {
  const results: Record<string, PushBlobResult> = {};
  return { results, onBlob: (d, r) => (results[d] = r) };
}

describe('push', () => {
  it('pushes blobs and manifest streaming from another registry; skopeo reads them', async () => {
    const image = await sourceImage('app');
    const { results, onBlob } = recorder();
    const digest = await pushImage(client, parseReference(`${proxy.host}/test/app:v1`), image, { onBlob });
    expect(digest).toBe(layout.refs.app);
    expect(Object.values(results).every((r) => r === 'uploaded')).toBe(true);
    expect(Object.keys(results).sort()).toEqual([image.configDigest, ...image.layers.map((l) => l.descriptor.digest)].sort());

    const seen = await skopeoInspect(`${dest.host}/test/app:v1`);
    expect(seen.digest).toBe(layout.refs.app);
    expect(sha256(seen.raw)).toBe(layout.refs.app);
    // skopeo copy reads and verifies every blob.
    await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${dest.host}/test/app:v1`, `oci:${join(work, 'copied')}:app`]);

    const monolithic = proxy.requests.filter((r) => r.method === 'PUT' && r.path.includes('/blobs/uploads/'));
    expect(monolithic).toHaveLength(image.layers.length + 1);
    expect(monolithic.every((r) => /[?&]digest=sha256%3A|[?&]digest=sha256:/.test(r.path))).toBe(true);
    expect(proxy.requests.some((r) => r.method === 'PATCH')).toBe(false);
    expect(proxy.requests.filter((r) => r.method === 'PUT' && r.path === '/v2/test/app/manifests/v1').map((r) => r.status)).toEqual([201]);
  });

  it('skips blobs the repository has (HEAD) on a second push', async () => {
    const image = await sourceImage('app');
    const { results, onBlob } = recorder();
    const fresh = new RegistryClient();
    try {
      await pushImage(fresh, parseReference(`${proxy.host}/test/app:v2`), image, { onBlob });
    } finally {
      fresh.close();
    }
    expect(Object.values(results)).toEqual(Array(image.layers.length + 1).fill('exists'));
    expect(proxy.requests.filter((r) => r.method === 'HEAD' && r.path.includes('/blobs/')).map((r) => r.status)).toEqual(Array(image.layers.length + 1).fill(200));
    expect(proxy.requests.some((r) => r.method === 'POST' || r.method === 'PATCH' || (r.method === 'PUT' && r.path.includes('/blobs/')))).toBe(false);
    expect((await skopeoInspect(`${dest.host}/test/app:v2`)).digest).toBe(layout.refs.app);
  });

  it('mounts blobs from another repository of the same registry', async () => {
    const image = await sourceImage('app');
    // This client pushed to test/app before: it knows where the blobs live.
    const { results, onBlob } = recorder();
    await pushImage(client, parseReference(`${proxy.host}/test/mounted:v1`), image, { onBlob });
    expect(Object.values(results)).toEqual(Array(image.layers.length + 1).fill('mounted'));
    const mounts = proxy.requests.filter((r) => r.method === 'POST' && r.path.includes('mount='));
    expect(mounts).toHaveLength(image.layers.length + 1);
    expect(mounts.every((r) => r.status === 201 && r.path.includes('from=test%2Fapp'))).toBe(true);
    expect((await skopeoInspect(`${dest.host}/test/mounted:v1`)).digest).toBe(layout.refs.app);

    // A fresh client mounts when told where from.
    const fresh = new RegistryClient();
    const second = recorder();
    try {
      await pushImage(fresh, parseReference(`${proxy.host}/test/mounted2:v1`), image, { onBlob: second.onBlob, mountFrom: ['test/app'] });
    } finally {
      fresh.close();
    }
    expect(Object.values(second.results)).toEqual(Array(image.layers.length + 1).fill('mounted'));
  });

  it('uploads in chunks (POST, PATCH..., PUT), streaming', async () => {
    const image = await sourceImage('big');
    const bigLayer = image.layers[1]!;
    const { results, onBlob } = recorder();
    const chunkSize = 1024 * 1024;
    const digest = await pushImage(client, parseReference(`${proxy.host}/test/big:chunked`), image, { onBlob, chunkSize });
    expect(digest).toBe(layout.refs.big);
    expect(results[bigLayer.descriptor.digest]).toBe('uploaded');
    const patches = proxy.requests.filter((r) => r.method === 'PATCH');
    // Only blobs larger than a chunk go in chunks: the big layer (3 MiB + tar overhead) needs 4 PATCHes.
    expect(patches).toHaveLength(Math.ceil(bigLayer.descriptor.size / chunkSize));
    expect(patches.every((r) => r.status === 202)).toBe(true);
    await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${dest.host}/test/big:chunked`, `oci:${join(work, 'copied')}:big`]);
  });

  it('pushes an index with every platform, byte for byte', async () => {
    const resolved = await resolveRemote(client, parseReference(`${source.host}/test/multi:latest`), 'all');
    const digest = await pushResolved(client, parseReference(`${proxy.host}/test/multi:latest`), resolved);
    expect(digest).toBe(layout.refs.multi);
    const seen = await skopeoInspect(`${dest.host}/test/multi:latest`);
    expect(sha256(seen.raw)).toBe(layout.refs.multi);
    expect(proxy.requests.filter((r) => r.method === 'PUT' && r.path.includes('/manifests/')).map((r) => r.path)).toEqual([
      ...resolved.images.map((i) => `/v2/test/multi/manifests/${i.digest}`),
      '/v2/test/multi/manifests/latest',
    ]);
  });

  it('refuses to push an index with platforms it does not carry', async () => {
    const resolved = await resolveRemote(client, parseReference(`${source.host}/test/multi:latest`));
    const err = await pushResolved(client, parseReference(`${proxy.host}/test/partial:latest`), resolved).catch((e: unknown) => e);
    expect(isFerryError(err, 'UNSUPPORTED')).toBe(true);
    expect((err as Error).message).toContain('not carried');
  });

  it('starts an upload again after a 500 or a dropped connection', async () => {
    const image = await sourceImage('big');
    proxy.setFaults([
      { kind: 'status', match: /^PUT \/v2\/test\/retried\/blobs\/uploads\//, status: 500 },
      { kind: 'drop', match: /^PATCH \/v2\/test\/retried\/blobs\/uploads\//, afterBytes: 0 },
    ]);
    // A fresh client knows no other repository to mount from: every blob is uploaded.
    const fresh = new RegistryClient({ retry: { baseDelayMs: 20, maxDelayMs: 200 } });
    const { results, onBlob } = recorder();
    try {
      await pushImage(fresh, parseReference(`${proxy.host}/test/retried:v1`), image, { chunkSize: 1024 * 1024, onBlob });
    } finally {
      fresh.close();
    }
    expect(Object.values(results)).toEqual(Array(image.layers.length + 1).fill('uploaded'));
    expect(proxy.pendingFaults()).toEqual([]);
    expect((await skopeoInspect(`${dest.host}/test/retried:v1`)).digest).toBe(layout.refs.big);
  });

  it('never commits bytes that do not match the digest', async () => {
    const bytes = Buffer.from('the bytes a caller claims');
    const claimed = digestOf('other bytes');
    const repo = { registry: proxy.host, repository: 'test/corrupt' };
    const err = await client.pushBlob(repo, { digest: claimed, size: bytes.length }, () => Promise.resolve(Readable.from([bytes]))).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect(await client.headBlob(repo, claimed)).toBeUndefined();
  });

  it('pushes a manifest under its digest only when the bytes match it', async () => {
    const image = await sourceImage('base');
    const err = await client
      .putManifest(parseReference(`${proxy.host}/test/base@${digestOf('not it')}`), image.rawManifest, image.mediaType)
      .catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
  });
});

describe('push with token auth', () => {
  it('pushes and mounts with push scopes (and the source scope for a mount)', async () => {
    const registry = await startRegistry({ auth: 'token' });
    const authed = new RegistryClient({ credentials: () => Promise.resolve({ username: registry.username!, password: registry.password! }) });
    try {
      const image = await sourceImage('base');
      await pushImage(authed, parseReference(`${registry.host}/team/one:v1`), image);
      const { results, onBlob } = recorder();
      await pushImage(authed, parseReference(`${registry.host}/team/two:v1`), image, { onBlob });
      expect(Object.values(results)).toEqual(Array(image.layers.length + 1).fill('mounted'));
      expect((await skopeoInspect(`${registry.host}/team/two:v1`, `${registry.username!}:${registry.password!}`)).digest).toBe(layout.refs.base);
      const scopes = registry.tokenRequests!.map((t) => t.scopes.slice().sort().join(' '));
      expect(scopes).toContain('repository:team/one:pull,push');
      expect(scopes).toContain('repository:team/one:pull repository:team/two:pull,push');
    } finally {
      authed.close();
      await registry.stop();
    }
  });
});
