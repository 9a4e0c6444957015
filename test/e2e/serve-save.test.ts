import { execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry, startFerryServe } from '../helpers/ferry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { fileTree } from '../helpers/tree.js';

/**
 * `ferry serve` and `ferry save` as users run them, on a store holding raw-imported images (only
 * unpacked: served compressed from the store's cache, with new manifests) and an as-pulled one
 * (served byte for byte). skopeo, umoci, another ferry (export -> import -> run) and podman read
 * what they offer.
 */
const run = promisify(execFile);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let work: string;
let layout: TestLayout;
let root: string;
let server: ChildProcess | undefined;
let host: string;

async function ferry(args: string[]): Promise<string> {
  const r = await runFerry(args, { env: { FERRY_CACHE_DIR: join(work, 'pull-cache') } });
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}


/** umoci unpack of an image in an OCI layout: its filesystem as a tree. */
async function unpackLayout(dir: string, tag: string, name: string): Promise<Record<string, string>> {
  await run('umoci', ['unpack', '--rootless', '--image', `${dir}:${tag}`, join(work, 'unpacked', name)]);
  return fileTree(join(work, 'unpacked', name, 'rootfs'));
}


beforeAll(async () => {
  work = await makeTempDir('e2e-serve');
  layout = await buildTestLayout(join(work, 'layout'));
  const oci = (n: string): string => `oci:${layout.dir}:${n}`;
  root = join(work, 'store');
  const raw = join(work, 'raw.tar.zst');
  const pulled = join(work, 'pulled.tar.zst');
  await ferry(['export', '-q', '--platform', 'all', '-o', raw, oci('app'), oci('multi')]);
  await ferry(['export', '-q', '--layers', 'as-pulled', '-o', pulled, oci('tools')]);
  await ferry(['--root', root, 'import', raw]);
  await ferry(['--root', root, 'import', pulled]);
  // Port 0: the kernel picks a free one; -q prints the address bound.
  const started = await startFerryServe(['--root', root, 'serve', '-q', '--listen', '127.0.0.1:0']);
  server = started.child;
  host = started.host;
});

afterAll(async () => {
  if (server !== undefined && server.exitCode === null) {
    const exited = new Promise((r) => server!.once('exit', r));
    server.kill('SIGTERM');
    await exited;
  }
  await removeDir(work);
});

describe('ferry serve', () => {
  it('lists every image; skopeo inspects and copies each; content equals the source', async () => {
    const catalog = (await (await fetch(`http://${host}/v2/_catalog`)).json()) as { repositories: string[] };
    expect(catalog.repositories.sort()).toEqual(['library/app', 'library/multi', 'library/tools']);
    for (const [name, arch] of [['app', 'amd64'], ['tools', 'amd64'], ['multi', 'amd64'], ['multi', 'arm64']] as const) {
      const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--override-arch', arch, `docker://${host}/library/${name}:latest`]);
      expect((JSON.parse(stdout) as { Architecture: string }).Architecture).toBe(name === 'multi' ? arch : layout.images[name]!.platform.split('/')[1]);
    }
    const copies = join(work, 'copies');
    await mkdir(copies, { recursive: true });
    for (const name of ['app', 'tools', 'multi']) {
      await run('skopeo', ['copy', '--quiet', '--all', '--src-tls-verify=false', `docker://${host}/library/${name}:latest`, `oci:${join(copies, name)}:x`]);
    }
    expect(await unpackLayout(join(copies, 'app'), 'x', 'served-app')).toEqual(await unpackLayout(layout.dir, 'app', 'source-app'));
    // The as-pulled image is served byte for byte: its digest is its registry digest.
    const head = await fetch(`http://${host}/v2/library/tools/manifests/latest`, { method: 'HEAD' });
    expect(head.headers.get('docker-content-digest')).toBe(layout.refs.tools);
    // The raw-imported app: its layers are the original tars (tar-split), compressed for serving;
    // the config (docker's image ID) is the source's.
    const app = await fetch(`http://${host}/v2/library/app/manifests/latest`);
    const body = Buffer.from(await app.arrayBuffer());
    expect(app.headers.get('docker-content-digest')).toBe(sha256(body));
    const served = JSON.parse(body.toString('utf8')) as { config: { digest: string } };
    expect(served.config.digest).toBe(layout.images.app!.configDigest);
  });

  it('another ferry with another root exports from it, imports and runs the image', async () => {
    const bundle = join(work, 'from-serve.tar.zst');
    await ferry(['export', '-q', '-o', bundle, `${host}/library/app:latest`]);
    const other = join(work, 'other-store');
    await ferry(['--root', other, 'import', bundle]);
    const r = await runFerry(['--root', other, 'run', '--rm', `${host}/library/app:latest`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('app says: hello');
  });

  it('refuses uploads with the spec error body; skopeo cannot push to it', async () => {
    const res = await fetch(`http://${host}/v2/library/app/blobs/uploads/`, { method: 'POST' });
    expect(res.status).toBe(405);
    expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('UNSUPPORTED');
    const push = run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout.dir}:base`, `docker://${host}/library/base:1`]);
    await expect(push).rejects.toThrow(/read-only|UNSUPPORTED|405/i);
  });
});

describe('ferry save', () => {
  it('writes a docker-archive skopeo reads and podman loads with its tags', async () => {
    const archive = join(work, 'saved.tar');
    await ferry(['--root', root, 'save', '-q', 'app', 'tools', '-o', archive]);
    const { stdout: listing } = await run('tar', ['tf', archive]);
    expect(listing.split('\n')).toEqual(expect.arrayContaining(['oci-layout', 'index.json', 'manifest.json', 'repositories']));
    const manifest = JSON.parse((await run('tar', ['xOf', archive, 'manifest.json'])).stdout) as Array<{ RepoTags: string[] }>;
    expect(manifest.map((m) => m.RepoTags)).toEqual([['docker.io/library/app:latest'], ['docker.io/library/tools:latest']]);
    const { stdout } = await run('skopeo', ['inspect', `docker-archive:${archive}:docker.io/library/tools:latest`]);
    expect((JSON.parse(stdout) as { Layers: string[] }).Layers).toHaveLength(2);
    const copy = join(work, 'saved-copy');
    await run('skopeo', ['copy', '--quiet', `docker-archive:${archive}:docker.io/library/app:latest`, `oci:${copy}:x`]);
    expect(await unpackLayout(copy, 'x', 'saved-app')).toEqual(await unpackLayout(layout.dir, 'app', 'source-app-2'));

    const podman = ['--root', join(work, 'podman', 'root'), '--runroot', join(work, 'podman', 'run'), '--storage-driver', 'vfs'];
    const loaded = await run('podman', [...podman, 'load', '-q', '-i', archive]);
    expect(loaded.stdout).toContain('docker.io/library/app:latest');
    const { stdout: images } = await run('podman', [...podman, 'images', '--format', '{{.Repository}}:{{.Tag}}']);
    expect(images.split('\n').filter((l) => l !== '').sort()).toEqual(['docker.io/library/app:latest', 'docker.io/library/tools:latest']);
  });

  it('what it writes imports back, every image under its name (docker load), and reads as an oci-archive by full name', async () => {
    const archive = join(work, 'round-trip.tar');
    await ferry(['--root', root, 'save', '-q', 'app', 'tools', '-o', archive]);
    const other = join(work, 'store-round-trip');
    await ferry(['--root', other, 'import', '-q', archive]);
    const names = async (store: string): Promise<string[]> => (JSON.parse(await ferry(['--root', store, 'images', '--json'])) as Array<{ name: string }>).map((i) => i.name).sort();
    expect(await names(other)).toEqual(['docker.io/library/app:latest', 'docker.io/library/tools:latest']);
    // The same file through its OCI index: an image named by the annotation that holds the full name.
    const third = join(work, 'store-round-trip-oci');
    await ferry(['--root', third, 'import', '-q', `oci-archive:${archive}:docker.io/library/tools:latest`]);
    expect(await names(third)).toEqual(['docker.io/library/tools:latest']);
  });
});
