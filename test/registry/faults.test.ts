import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import type { Digest } from '../../src/oci/digest.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient, type Repository } from '../../src/registry/client.js';
import { resolveRemote } from '../../src/registry/remote-image.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayer, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const BIG = 3 * 1024 * 1024;

let work: string;
let layout: TestLayout;
let registry: RunningRegistry;
let proxy: FaultProxy;
let client: RegistryClient;
let repo: Repository;
let big: TestLayer;
let bigTarget: { digest: Digest; size: number };

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const blobPath = (digest: string): RegExp => new RegExp(`^GET /v2/test/big/blobs/${escape(digest)}$`);
const blobGets = (digest: string): FaultProxy['requests'] => proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`));

beforeAll(async () => {
  work = await makeTempDir('registry-faults');
  layout = await buildTestLayout(join(work, 'layout'), { bigLayerBytes: BIG });
  registry = await startRegistry();
  await pushTestImages(layout, registry);
  proxy = await startFaultProxy(registry.host);
  // Short backoff so the retries of these tests take milliseconds; Retry-After is still honoured.
  client = new RegistryClient({ retry: { baseDelayMs: 20, maxDelayMs: 200 } });
  repo = { registry: proxy.host, repository: 'test/big' };
  big = layout.images.big!.layers[1]!;
  bigTarget = { digest: big.digest as Digest, size: big.size };
  expect(big.size).toBeGreaterThan(BIG);
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

describe('a connection dropped mid-blob', () => {
  it('is resumed with Range from the byte reached, and the blob completes verified', async () => {
    proxy.setFaults([{ kind: 'drop', match: blobPath(big.digest), afterBytes: 1_000_000, times: 2 }]);
    const bytes = await collect(await client.openBlob(repo, bigTarget));
    expect(sha256(bytes)).toBe(big.digest);
    expect(proxy.pendingFaults()).toEqual([]);
    const gets = blobGets(big.digest);
    expect(gets).toHaveLength(3);
    expect(gets[0]!.range).toBeUndefined();
    const first = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]);
    const second = Number(/^bytes=(\d+)-$/.exec(gets[2]!.range ?? '')?.[1]);
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThanOrEqual(1_000_000);
    expect(second).toBeGreaterThan(first);
    expect(gets[1]!.status).toBe(206);
  });

  it('is resumed for a layer of a resolved image (Layer.blob and Layer.tar)', async () => {
    const image = (await resolveRemote(client, parseReference(`${proxy.host}/test/big:latest`))).images[0]!;
    const layer = image.layers[1]!;
    proxy.setFaults([{ kind: 'drop', match: blobPath(big.digest), afterBytes: 500_000, times: 2 }]);
    expect(sha256(await collect(await layer.blob()))).toBe(big.digest);
    const tar = await collect(await layer.tar());
    expect(sha256(tar)).toBe(big.diffId);
    expect(proxy.pendingFaults()).toEqual([]);
    expect(blobGets(big.digest).filter((r) => r.range !== undefined).length).toBe(2);
  });

  it('gives up after the bounded retries with a NETWORK_ERROR naming the blob', async () => {
    proxy.setFaults([{ kind: 'drop', match: blobPath(big.digest), afterBytes: 0, times: 50 }]);
    const err = await collect(await client.openBlob(repo, bigTarget)).catch((e: unknown) => e);
    expect(isFerryError(err, 'NETWORK_ERROR')).toBe(true);
    expect((err as Error).message).toContain(big.digest);
    expect(blobGets(big.digest).length).toBeLessThanOrEqual(5);
  });
});

describe('a flipped byte', () => {
  it('fails the stream with DIGEST_MISMATCH: bad bytes are never accepted', async () => {
    proxy.setFaults([{ kind: 'flip', match: blobPath(big.digest), offset: 123_456 }]);
    const err = await collect(await client.openBlob(repo, bigTarget)).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect((err as Error).message).toContain(big.digest);

    const image = (await resolveRemote(client, parseReference(`${proxy.host}/test/big:latest`))).images[0]!;
    proxy.setFaults([{ kind: 'flip', match: blobPath(big.digest), offset: 5 }]);
    const layerErr = await collect(await image.layers[1]!.blob()).catch((e: unknown) => e);
    expect(isFerryError(layerErr, 'DIGEST_MISMATCH')).toBe(true);
  });

  it('is fetched again by downloadBlob, which writes only the verified blob', async () => {
    proxy.setFaults([{ kind: 'flip', match: blobPath(big.digest), offset: 2_000_000 }]);
    const path = join(work, 'big-blob');
    await client.downloadBlob(repo, bigTarget, path);
    expect(sha256(await readFile(path))).toBe(big.digest);
    expect(blobGets(big.digest)).toHaveLength(2);
  });

  it('is never written when every copy is bad (bounded refetches)', async () => {
    proxy.setFaults([{ kind: 'flip', match: blobPath(big.digest), offset: 77, times: 50 }]);
    const dir = join(work, 'bad');
    await mkdir(dir);
    const err = await client.downloadBlob(repo, bigTarget, join(dir, 'blob')).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect(await readdir(dir)).toEqual([]);
    expect(blobGets(big.digest)).toHaveLength(3);
  });

  it('every copy bad: the error names the blob and the path; a file already at the path stays as it was', async () => {
    proxy.setFaults([{ kind: 'flip', match: blobPath(big.digest), offset: 1_000_000, times: 50 }]);
    const dir = join(work, 'bad-existing');
    await mkdir(dir);
    const path = join(dir, 'blob');
    await writeFile(path, 'the old file');
    const err = await client.downloadBlob(repo, bigTarget, path).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect((err as Error).message).toContain(big.digest);
    expect((err as Error).message).toContain(path);
    expect(await readdir(dir)).toEqual(['blob']);
    expect(await readFile(path, 'utf8')).toBe('the old file');
  });

  it('an abort midway leaves nothing at the path, not even a temp file', async () => {
    const dir = join(work, 'aborted');
    await mkdir(dir);
    const controller = new AbortController();
    proxy.setFaults([{ kind: 'drop', match: blobPath(big.digest), afterBytes: 1_000_000, times: 1 }]);
    const downloading = client.downloadBlob(repo, bigTarget, join(dir, 'blob'), { signal: controller.signal }).catch((e: unknown) => e);
    // Abort once the temp file is there: midway through the blob.
    while ((await readdir(dir)).length === 0) await new Promise((r) => setTimeout(r, 1));
    controller.abort();
    const err = await downloading;
    expect((err as Error).name).toBe('AbortError');
    expect(await readdir(dir)).toEqual([]);
  });

  it('in a manifest or config is detected and fetched again', async () => {
    const app = layout.images.app!;
    const byTag = parseReference(`${proxy.host}/test/app:latest`);
    proxy.setFaults([
      { kind: 'flip', match: /^GET \/v2\/test\/app\/manifests\/latest$/, offset: 10 },
      { kind: 'flip', match: new RegExp(`^GET /v2/test/app/manifests/${escape(app.manifestDigest)}$`), offset: 10 },
      { kind: 'flip', match: new RegExp(`^GET /v2/test/app/blobs/${escape(app.configDigest)}$`), offset: 10 },
    ]);
    expect((await client.getManifest(byTag)).digest).toBe(app.manifestDigest);
    const byDigest = await client.getManifest(parseReference(`${proxy.host}/test/app@${app.manifestDigest}`));
    expect(sha256(byDigest.raw)).toBe(app.manifestDigest);
    const image = (await resolveRemote(client, byTag)).images[0]!;
    expect(sha256(image.rawConfig)).toBe(app.configDigest);
    expect(proxy.pendingFaults()).toEqual([]);
  });
});

describe('temporary errors', () => {
  it('429 with Retry-After is honoured: the retry waits at least that long', async () => {
    proxy.setFaults([{ kind: 'status', match: /^GET \/v2\/test\/base\/manifests\/latest$/, status: 429, retryAfter: 2 }]);
    const started = Date.now();
    const got = await client.getManifest(parseReference(`${proxy.host}/test/base:latest`));
    const elapsed = Date.now() - started;
    expect(got.digest).toBe(layout.refs.base);
    expect(elapsed).toBeGreaterThanOrEqual(2000);
    expect(proxy.requests.filter((r) => r.path.endsWith('/manifests/latest')).map((r) => r.status)).toEqual([429, 200]);
  });

  it('a Retry-After longer than the client will wait fails clearly', async () => {
    const impatient = new RegistryClient({ retry: { maxRetryAfterMs: 1000 } });
    try {
      proxy.setFaults([{ kind: 'status', match: /^GET \/v2\/test\/base\/manifests\/latest$/, status: 429, retryAfter: 30 }]);
      const err = await impatient.getManifest(parseReference(`${proxy.host}/test/base:latest`)).catch((e: unknown) => e);
      expect((err as Error).message).toContain('too many requests');
      expect((err as Error).message).toContain('retry after 30 s');
    } finally {
      impatient.close();
    }
  });

  it('500s are retried (manifests, blob GETs, HEADs)', async () => {
    const base = layout.images.base!;
    proxy.setFaults([
      { kind: 'status', match: /^GET \/v2\/test\/base\/manifests\/latest$/, status: 500, times: 2 },
      { kind: 'status', match: new RegExp(`^GET /v2/test/base/blobs/${escape(base.configDigest)}$`), status: 502 },
      { kind: 'status', match: new RegExp(`^HEAD /v2/test/base/blobs/`), status: 503 },
    ]);
    const image = (await resolveRemote(client, parseReference(`${proxy.host}/test/base:latest`))).images[0]!;
    expect(image.digest).toBe(base.manifestDigest);
    expect(await client.headBlob({ registry: proxy.host, repository: 'test/base' }, base.layers[0]!.digest as Digest)).toBe(base.layers[0]!.size);
    expect(proxy.pendingFaults()).toEqual([]);
  });

  it('a 500 that persists fails after the bounded retries, naming the status', async () => {
    proxy.setFaults([{ kind: 'status', match: /^GET \/v2\/test\/base\/manifests\/latest$/, status: 500, times: 50 }]);
    const err = await client.getManifest(parseReference(`${proxy.host}/test/base:latest`)).catch((e: unknown) => e);
    expect(isFerryError(err, 'REGISTRY_ERROR')).toBe(true);
    expect((err as Error).message).toContain(`get manifest ${proxy.host}/test/base:latest: the registry answered 500 (HTTP 500`);
    expect(proxy.requests.filter((r) => r.path.endsWith('/manifests/latest'))).toHaveLength(5);
  });
});
