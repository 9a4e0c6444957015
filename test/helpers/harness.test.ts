import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, lstat, readFile, readlink, stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { runFerry } from './ferry.js';
import { accessLog, countBlobGets, startRegistry, type RegistryAuth, type RunningRegistry } from './registry.js';
import { APP_EXPECTATIONS, buildTestLayout, pushTestImages, type TestLayout } from './test-images.js';
import { makeTempDir, removeDir } from './tmp.js';

const run = promisify(execFile);

async function skopeo(args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('skopeo', args, { maxBuffer: 16 << 20 });
    return { ok: true, stdout, stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Set when the body stopped short (connection dropped). */
  error: Error | undefined;
}

/** A plain node:http request that keeps what arrived even when the connection drops mid-body. */
function rawRequest(url: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let error: Error | undefined;
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (err) => {
        error = err;
      });
      res.on('close', () => {
        if (!res.complete && error === undefined) error = new Error('response ended before its end');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), error });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

let work: string;
let layout: TestLayout;

beforeAll(async () => {
  work = await makeTempDir('harness');
  layout = await buildTestLayout(join(work, 'layout'), { bigLayerBytes: 3 * 1024 * 1024 + 17 });
});

afterAll(async () => {
  await removeDir(work);
});

describe('test images', () => {
  it('are deterministic: a second build gives the same digests', async () => {
    const again = await buildTestLayout(join(work, 'layout-again'), { bigLayerBytes: 3 * 1024 * 1024 + 17 });
    expect(again.refs).toEqual(layout.refs);
    expect(Object.keys(layout.refs)).toEqual(['base', 'app', 'tools', 'multi', 'big']);
  });

  it('share the base layer and differ per platform', () => {
    const base = layout.images.base!.layers[0]!.digest;
    for (const name of ['app', 'tools', 'big', 'multi@linux/amd64', 'multi@linux/arm64']) {
      expect(layout.images[name]!.layers[0]!.digest, name).toBe(base);
    }
    expect(layout.images['multi@linux/arm64']!.manifestDigest).not.toBe(layout.images['multi@linux/amd64']!.manifestDigest);
    expect(layout.images['multi@linux/arm64']!.platform).toBe('linux/arm64/v8');
  });

  it('are read by skopeo with the config they were given', async () => {
    const app = await skopeo(['inspect', `oci:${layout.dir}:app`]);
    expect(app.stderr).toBe('');
    const info = JSON.parse(app.stdout) as { Digest: string; Layers: string[]; Env: string[] };
    expect(info.Digest).toBe(layout.refs.app);
    expect(info.Layers).toEqual(layout.images.app!.layers.map((l) => l.digest));
    expect(info.Env).toContain('APP_MODE=test');

    const config = JSON.parse((await skopeo(['inspect', '--config', `oci:${layout.dir}:app`])).stdout) as {
      config: Record<string, unknown>;
      rootfs: { diff_ids: string[] };
      history: Array<{ empty_layer?: boolean }>;
    };
    expect(config.config).toMatchObject({ Entrypoint: ['/opt/app/run.sh'], Cmd: ['hello'], WorkingDir: '/opt/app', User: 'app' });
    expect(config.rootfs.diff_ids).toEqual(layout.images.app!.layers.map((l) => l.diffId));
    expect(config.history.filter((h) => h.empty_layer !== true)).toHaveLength(2);

    const multi = JSON.parse((await skopeo(['inspect', '--raw', `oci:${layout.dir}:multi`])).stdout) as {
      manifests: Array<{ platform: { architecture: string } }>;
    };
    expect(multi.manifests.map((m) => m.platform.architecture)).toEqual(['amd64', 'arm64']);
  });

  it('unpack with umoci: whiteout, opaque dir, links and setuid do their job', async () => {
    const bundle = join(work, 'unpacked-app');
    await run('umoci', ['unpack', '--rootless', '--image', `${layout.dir}:app`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    for (const path of APP_EXPECTATIONS.present) await access(join(rootfs, path));
    for (const path of APP_EXPECTATIONS.absent) {
      await expect(lstat(join(rootfs, path)), path).rejects.toMatchObject({ code: 'ENOENT' });
    }
    expect(await readFile(join(rootfs, 'etc/app/app.conf'), 'utf8')).toBe(APP_EXPECTATIONS.appConf);
    expect(await readlink(join(rootfs, APP_EXPECTATIONS.symlink.path))).toBe(APP_EXPECTATIONS.symlink.target);
    const original = await stat(join(rootfs, APP_EXPECTATIONS.hardlink.target));
    expect((await stat(join(rootfs, APP_EXPECTATIONS.hardlink.path))).ino).toBe(original.ino);
    expect((await stat(join(rootfs, APP_EXPECTATIONS.setuid.path))).mode & 0o7777).toBe(APP_EXPECTATIONS.setuid.mode);
    expect(await readlink(join(rootfs, 'bin/sh'))).toBe('busybox');
  });

  it('the big layer holds exactly the requested number of bytes', async () => {
    const bigLayer = layout.images.big!.layers[1]!;
    const listing = await run('tar', ['-tvzf', join(layout.dir, 'blobs/sha256', bigLayer.digest.slice(7))]);
    expect(listing.stdout).toMatch(new RegExp(`\\s${3 * 1024 * 1024 + 17}\\s.*data/big\\.bin`));
  });
});

describe.each<RegistryAuth>(['none', 'basic', 'token'])('registry with auth=%s', (auth) => {
  let registry: RunningRegistry;
  let pushed: Record<string, string>;
  const creds = (): string[] => (registry.username === undefined ? [] : ['--creds', `${registry.username}:${registry.password!}`]);

  beforeAll(async () => {
    registry = await startRegistry({ auth });
    const { big: _big, ...refs } = layout.refs;
    pushed = await pushTestImages({ ...layout, refs }, registry);
  });

  afterAll(async () => {
    await registry?.stop();
  });

  it('takes the pushed images with their digests, and skopeo inspects them', async () => {
    expect(Object.keys(pushed).sort()).toEqual(
      ['app', 'base', 'multi', 'tools'].map((n) => `${registry.host}/test/${n}:latest`),
    );
    const app = await skopeo(['inspect', '--tls-verify=false', ...creds(), `docker://${registry.host}/test/app:latest`]);
    expect(app.stderr).toBe('');
    expect((JSON.parse(app.stdout) as { Digest: string }).Digest).toBe(layout.refs.app);
    const multi = await skopeo(['inspect', '--raw', '--tls-verify=false', ...creds(), `docker://${registry.host}/test/multi:latest`]);
    expect(sha256(Buffer.from(multi.stdout))).toBe(layout.refs.multi);
    // The access log is on: the manifest GET shows up.
    expect(await registry.log()).toMatch(/"GET \/v2\/test\/app\/manifests\/latest HTTP\/1\.1" 200/);
  });

  it('logs every blob GET, so tests can count downloads', async () => {
    const appLayer = layout.images.app!.layers[1]!.digest;
    expect(countBlobGets(await registry.log(), appLayer)).toBe(0);
    const copy = await skopeo([
      'copy', '--src-tls-verify=false', ...(registry.username === undefined ? [] : ['--src-creds', `${registry.username}:${registry.password!}`]),
      `docker://${registry.host}/test/app:latest`, `oci:${join(work, `pulled-${auth}`)}:app`,
    ]);
    expect(copy.stderr).toBe('');
    // Read at once: log() waits until every request made so far is in the log.
    const log = await registry.log();
    expect(countBlobGets(log, appLayer)).toBe(1);
    expect(countBlobGets(log, layout.images.app!.layers[0]!.digest)).toBe(1);
    expect(accessLog(log).some((e) => e.method === 'GET' && e.path === '/v2/test/app/manifests/latest' && e.status === 200)).toBe(true);
  });

  it.runIf(auth !== 'none')('refuses anonymous and wrong credentials', async () => {
    const anonymous = await skopeo(['inspect', '--tls-verify=false', '--no-creds', `docker://${registry.host}/test/app:latest`]);
    expect(anonymous.ok).toBe(false);
    expect(anonymous.stderr).toMatch(/unauthorized|authentication required/i);
    const wrong = await skopeo(['inspect', '--tls-verify=false', '--creds', 'ferry:wrong', `docker://${registry.host}/test/app:latest`]);
    expect(wrong.ok).toBe(false);
    const direct = await fetch(`http://${registry.host}/v2/test/app/manifests/latest`);
    expect(direct.status).toBe(401);
    expect(direct.headers.get('www-authenticate')).toMatch(auth === 'basic' ? /^Basic / : /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token"/);
  });

  it.runIf(auth === 'token')('grants a pull-only user pull but not push, and records token requests', async () => {
    const reader = registry.readOnlyUser!;
    const pull = await skopeo(['inspect', '--tls-verify=false', '--creds', `${reader.username}:${reader.password}`, `docker://${registry.host}/test/base:latest`]);
    expect(pull.stderr).toBe('');
    const push = await skopeo([
      'copy', '--dest-tls-verify=false', '--dest-creds', `${reader.username}:${reader.password}`,
      `oci:${layout.dir}:base`, `docker://${registry.host}/test/reader-push:latest`,
    ]);
    expect(push.ok).toBe(false);
    expect(push.stderr).toMatch(/denied|unauthorized|authentication required/i);
    const requests = registry.tokenRequests!;
    expect(requests.some((r) => r.user === 'ferry' && r.scopes.some((s) => s.endsWith(':pull,push')))).toBe(true);
    expect(requests.some((r) => r.user === undefined)).toBe(true);
  });

  it('stop() ends the registry and removes its storage', async () => {
    const other = await startRegistry({ auth });
    await other.stop();
    expect(await other.log()).toMatch(/listening on 127\.0\.0\.1:\d+/);
    await expect(fetch(`http://${other.host}/v2/`)).rejects.toThrow();
    await expect(access(other.storageDir)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('fault proxy', () => {
  let registry: RunningRegistry;
  let proxy: FaultProxy;
  let blobDigest: string;
  let blob: Buffer;
  let authHeader: Record<string, string>;

  beforeAll(async () => {
    registry = await startRegistry({ auth: 'basic' });
    await pushTestImages({ ...layout, refs: { base: layout.refs.base! } }, registry);
    proxy = await startFaultProxy(registry.host);
    authHeader = { authorization: `Basic ${Buffer.from(`${registry.username!}:${registry.password!}`).toString('base64')}` };
    blobDigest = layout.images.base!.layers[0]!.digest;
    blob = await readFile(join(layout.dir, 'blobs/sha256', blobDigest.slice(7)));
  });

  afterAll(async () => {
    await proxy?.stop();
    await registry?.stop();
  });

  const blobUrl = (): string => `http://${proxy.host}/v2/test/base/blobs/${blobDigest}`;

  it('forwards challenges, credentials and ranges untouched', async () => {
    const direct = await rawRequest(`http://${registry.host}/v2/`);
    const viaProxy = await rawRequest(`http://${proxy.host}/v2/`);
    expect(viaProxy.status).toBe(401);
    expect(viaProxy.headers['www-authenticate']).toBe(direct.headers['www-authenticate']);

    const whole = await rawRequest(blobUrl(), { headers: authHeader });
    expect(whole.status).toBe(200);
    expect(sha256(whole.body)).toBe(blobDigest);
    expect(whole.headers['docker-content-digest']).toBe(blobDigest);

    const ranged = await rawRequest(blobUrl(), { headers: { ...authHeader, range: 'bytes=100-199' } });
    expect(ranged.status).toBe(206);
    expect(ranged.body).toEqual(blob.subarray(100, 200));
    expect(proxy.requests.at(-1)).toMatchObject({ method: 'GET', status: 206, range: 'bytes=100-199' });
  });

  it('carries skopeo pulls and pushes (uploads follow Location back through the proxy)', async () => {
    const creds = ['--creds', `${registry.username!}:${registry.password!}`];
    const inspect = await skopeo(['inspect', '--tls-verify=false', ...creds, `docker://${proxy.host}/test/base:latest`]);
    expect(inspect.stderr).toBe('');
    const before = proxy.requests.length;
    const push = await skopeo([
      'copy', '--dest-tls-verify=false', '--dest-creds', `${registry.username!}:${registry.password!}`,
      `oci:${layout.dir}:tools`, `docker://${proxy.host}/test/tools-via-proxy:latest`,
    ]);
    expect(push.stderr).toBe('');
    const lines = proxy.requests.slice(before).map((r) => `${r.method} ${r.path.split('?')[0]!} ${r.status}`);
    expect(lines.some((l) => /^(PUT|PATCH) \/v2\/test\/tools-via-proxy\/blobs\/uploads\/[^/]+ 20[12]$/.test(l))).toBe(true);
    expect(lines).toContain('PUT /v2/test/tools-via-proxy/manifests/latest 201');
    const check = await skopeo(['inspect', '--tls-verify=false', ...creds, `docker://${registry.host}/test/tools-via-proxy:latest`]);
    expect((JSON.parse(check.stdout) as { Digest: string }).Digest).toBe(layout.refs.tools);
  });

  it('answers an injected status with Retry-After, as many times as asked', async () => {
    proxy.setFaults([{ kind: 'status', match: /^GET .*\/blobs\/sha256:/, status: 429, retryAfter: 3, times: 2 }]);
    for (let i = 0; i < 2; i++) {
      const limited = await rawRequest(blobUrl(), { headers: authHeader });
      expect(limited.status).toBe(429);
      expect(limited.headers['retry-after']).toBe('3');
    }
    const ok = await rawRequest(blobUrl(), { headers: authHeader });
    expect(ok.status).toBe(200);
    expect(proxy.pendingFaults()).toEqual([]);

    proxy.setFaults([{ kind: 'status', match: /^HEAD /, status: 500 }]);
    expect((await rawRequest(blobUrl(), { method: 'HEAD', headers: authHeader })).status).toBe(500);
    expect((await rawRequest(blobUrl(), { method: 'HEAD', headers: authHeader })).status).toBe(200);
  });

  it('drops the connection after the given number of body bytes', async () => {
    proxy.setFaults([{ kind: 'drop', match: /^GET .*\/blobs\/sha256:/, afterBytes: 1000 }]);
    const dropped = await rawRequest(blobUrl(), { headers: authHeader });
    expect(dropped.status).toBe(200);
    expect(dropped.headers['content-length']).toBe(String(blob.length));
    expect(dropped.error).toBeDefined();
    expect(dropped.body).toEqual(blob.subarray(0, 1000));

    proxy.setFaults([{ kind: 'drop', match: /^GET .*\/blobs\/sha256:/, afterBytes: 0 }]);
    const immediately = await rawRequest(blobUrl(), { headers: authHeader });
    expect(immediately.error).toBeDefined();
    expect(immediately.body.length).toBe(0);

    const whole = await rawRequest(blobUrl(), { headers: authHeader });
    expect(whole.error).toBeUndefined();
    expect(sha256(whole.body)).toBe(blobDigest);
  });

  it('flips exactly one byte at the given offset', async () => {
    proxy.setFaults([{ kind: 'flip', match: /^GET .*\/blobs\/sha256:/, offset: 70_000 }]);
    const flipped = await rawRequest(blobUrl(), { headers: authHeader });
    expect(flipped.status).toBe(200);
    expect(flipped.error).toBeUndefined();
    expect(flipped.body.length).toBe(blob.length);
    expect(sha256(flipped.body)).not.toBe(blobDigest);
    const differing = [...flipped.body.keys()].filter((i) => flipped.body[i] !== blob[i]);
    expect(differing).toEqual([70_000]);
    expect(flipped.body[70_000]).toBe(blob[70_000]! ^ 0xff);
  });
});

describe('runFerry', () => {
  it('runs bin/ferry.js and reports its exit code and output', async () => {
    const version = await runFerry(['--version']);
    expect(version).toMatchObject({ code: 0, stderr: '' });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const bad = await runFerry(['no-such-command']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).not.toBe('');
  });
});
