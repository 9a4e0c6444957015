import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openOciLayout } from '../../src/archive/index.js';
import { contentFromImages } from '../../src/registry/served-content.js';
import { parseReference } from '../../src/oci/reference.js';
import { parseRange, startRegistryServer, type RegistryServer } from '../../src/registry/server.js';
import { runFerry } from '../helpers/ferry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let work: string;
let layout: TestLayout;
let server: RegistryServer;

beforeAll(async () => {
  work = await makeTempDir('registry-server');
  layout = await buildTestLayout(join(work, 'layout'));
  const entries = [];
  for (const name of ['base', 'app', 'multi']) {
    const resolved = await openOciLayout(layout.dir, name, 'all');
    entries.push({ ref: parseReference(`localhost/test/${name}:1`), images: resolved.images, ...(resolved.index ? { index: resolved.index } : {}) });
  }
  server = await startRegistryServer(contentFromImages(entries), { host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await server.close();
  await removeDir(work);
});

describe('read-only registry server', () => {
  it('serves manifests by tag and digest with media type and Docker-Content-Digest', async () => {
    const res = await fetch(`http://${server.host}/v2/test/app/manifests/1`);
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    expect(res.headers.get('docker-content-digest')).toBe(layout.refs.app);
    expect(sha256(body)).toBe(layout.refs.app);
    expect(res.headers.get('content-type')).toBe('application/vnd.oci.image.manifest.v1+json');
    const byDigest = await fetch(`http://${server.host}/v2/test/app/manifests/${layout.refs.app}`);
    expect(byDigest.status).toBe(200);
    const head = await fetch(`http://${server.host}/v2/test/app/manifests/1`, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe(String(body.length));
  });

  it('answers unknown names with the spec error body', async () => {
    const res = await fetch(`http://${server.host}/v2/test/nope/manifests/1`);
    expect(res.status).toBe(404);
    const body = (await res.json()) as { errors: Array<{ code: string }> };
    expect(body.errors[0]?.code).toBe('MANIFEST_UNKNOWN');
  });

  it('serves blob ranges', async () => {
    const layer = layout.images.app!.layers[0]!;
    const full = Buffer.from(await (await fetch(`http://${server.host}/v2/test/app/blobs/${layer.digest}`)).arrayBuffer());
    expect(sha256(full)).toBe(layer.digest);
    const part = await fetch(`http://${server.host}/v2/test/app/blobs/${layer.digest}`, { headers: { Range: 'bytes=10-99' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-99/${full.length}`);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(full.subarray(10, 100));
    expect(parseRange('bytes=-5', 10)).toEqual({ start: 5, end: 9 });
    expect(parseRange('bytes=20-', 10)).toBe('invalid');
  });

  it('lists tags and the catalog', async () => {
    const tags = (await (await fetch(`http://${server.host}/v2/test/multi/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags).toEqual(['1']);
    const catalog = (await (await fetch(`http://${server.host}/v2/_catalog`)).json()) as { repositories: string[] };
    expect(catalog.repositories.sort()).toEqual(['test/app', 'test/base', 'test/multi']);
  });

  it('refuses uploads', async () => {
    const res = await fetch(`http://${server.host}/v2/test/app/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(405);
    const body = (await res.json()) as { errors: Array<{ code: string }> };
    expect(body.errors[0]?.code).toBe('UNSUPPORTED');
  });

  it('skopeo inspects and copies every image, the index included', async () => {
    const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${server.host}/test/multi:1`], { encoding: 'buffer' });
    expect(sha256(stdout)).toBe(layout.refs.multi);
    const dest = join(work, 'copied');
    await run('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${server.host}/test/multi:1`, `oci:${dest}:multi`]);
    await run('skopeo', ['copy', '--src-tls-verify=false', `docker://${server.host}/test/app:1`, `oci:${dest}:app`]);
    const index = JSON.parse(await readFile(join(dest, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    expect(index.manifests.map((m) => m.digest)).toEqual([layout.refs.multi, layout.refs.app]);
  });

  it('ferry inspect reads from it', async () => {
    const r = await runFerry(['inspect', '--platform', 'linux/arm64', `${server.host}/test/multi:1`]);
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as { digest: string; platform: string };
    expect(json.platform).toBe('linux/arm64');
    expect(json.digest).toBe(layout.images['multi@linux/arm64']!.manifestDigest);
  });
});
