import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry } from '../helpers/ferry.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { APP_CONFIG, buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * `podman save` output imports: a docker-archive of one image, of several (`save -m`), and an OCI
 * archive. podman pulls from the harness registry into its own storage under the test's temp dir
 * (nothing of it outlives the test); the images keep their config (podman's and docker's image
 * ID) and diffIds, so ferry's store holds the same image under the name podman gave it.
 */
const run = promisify(execFile);
let work: string;
let layout: TestLayout;
let registry: RunningRegistry;
let podmanArgs: string[];

async function podman(args: string[]): Promise<string> {
  // TMPDIR: podman stages image copies there (else in /var/tmp).
  const env = { ...process.env, TMPDIR: join(work, 'podman', 'tmp') };
  const { stdout } = await run('podman', [...podmanArgs, ...args], { env, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

interface Inspected {
  name: string;
  digest: string;
  config: string;
  layers: Array<{ digest: string; mediaType: string }>;
  env: string[];
  entrypoint: string[] | null;
  cmd: string[] | null;
  workingDir: string;
  user: string;
}

async function ferry(root: string, args: string[]): Promise<string> {
  const r = await runFerry(['--root', root, ...args]);
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/** The image ferry stored under `name`: its JSON, and the diffIds its config names. */
async function stored(root: string, name: string): Promise<{ json: Inspected; diffIds: string[] }> {
  const json = JSON.parse(await ferry(root, ['inspect', name])) as Inspected;
  const config = JSON.parse(await ferry(root, ['inspect', '--raw', name])) as { config: { digest: string } };
  expect(config.config.digest).toBe(json.config);
  const { stdout } = await run('cat', [join(root, 'blobs', 'sha256', json.config.slice(7))]);
  return { json, diffIds: (JSON.parse(stdout) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids };
}

beforeAll(async () => {
  work = await makeTempDir('import-podman');
  layout = await buildTestLayout(join(work, 'layout'));
  registry = await startRegistry();
  await pushTestImages(layout, registry);
  // Its own storage, no systemd (cgroupfs), events to a file: a podman that touches nothing outside work/.
  podmanArgs = [
    '--root', join(work, 'podman', 'root'),
    '--runroot', join(work, 'podman', 'run'),
    '--tmpdir', join(work, 'podman', 'tmp'),
    '--storage-driver', 'vfs',
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'file',
  ];
  await mkdir(join(work, 'podman', 'tmp'), { recursive: true });
  for (const name of ['app', 'tools']) await podman(['pull', '-q', '--tls-verify=false', `${registry.host}/test/${name}`]);
}, 120_000);
afterAll(async () => {
  // vfs layers are plain directories; podman's own reset is not needed, the temp dir goes whole.
  await registry?.stop();
  await removeDir(work);
});

describe('ferry import of podman save output', () => {
  it('a docker-archive of one image (podman save): same config, diffIds and config fields', async () => {
    const archive = join(work, 'app.tar');
    await podman(['save', '-q', '-o', archive, `${registry.host}/test/app`]);
    // podman's image ID is the config digest: the same one the registry served.
    const podmanId = (await podman(['image', 'inspect', '--format', '{{.Id}}', `${registry.host}/test/app`])).trim();
    expect(`sha256:${podmanId}`).toBe(layout.images.app!.configDigest);
    const root = join(work, 'store-one');
    expect(await ferry(root, ['import', archive])).toMatch(new RegExp(`imported ${registry.host.replace(/\./g, '\\.')}/test/app:latest \\(linux/`));
    const { json, diffIds } = await stored(root, `${registry.host}/test/app`);
    expect(json.config).toBe(layout.images.app!.configDigest);
    expect(diffIds).toEqual(layout.images.app!.layers.map((l) => l.diffId));
    expect(json.layers).toHaveLength(layout.images.app!.layers.length);
    expect(json).toMatchObject({ env: APP_CONFIG.Env, entrypoint: APP_CONFIG.Entrypoint, cmd: APP_CONFIG.Cmd, workingDir: APP_CONFIG.WorkingDir, user: APP_CONFIG.User });
    // The image ID podman shows finds it in ferry's store too.
    expect((JSON.parse(await ferry(root, ['inspect', podmanId.slice(0, 12)])) as Inspected).digest).toBe(json.digest);
    expect(await ferry(root, ['fsck'])).toMatch(/0 problems/);
  });

  it('a docker-archive of several images (podman save -m) imports each under each of its names', async () => {
    const archive = join(work, 'both.tar');
    await podman(['tag', `${registry.host}/test/app`, 'example.com/team/app:2']);
    await podman(['save', '-q', '-m', '-o', archive, `${registry.host}/test/app`, 'example.com/team/app:2', `${registry.host}/test/tools`]);
    const root = join(work, 'store-multi');
    const out = await ferry(root, ['import', archive]);
    expect(out).toMatch(/imported 3 images in /);
    const images = JSON.parse(await ferry(root, ['images', '--json'])) as Array<{ name: string; manifestDigest: string }>;
    expect(images.map((i) => i.name).sort()).toEqual([`${registry.host}/test/app:latest`, `${registry.host}/test/tools:latest`, 'example.com/team/app:2'].sort());
    const digestOf = (name: string): string | undefined => images.find((i) => i.name === name)?.manifestDigest;
    expect(digestOf('example.com/team/app:2')).toBe(digestOf(`${registry.host}/test/app:latest`));
    for (const name of ['app', 'tools'] as const) {
      const { json, diffIds } = await stored(root, `${registry.host}/test/${name}`);
      expect(json.config, name).toBe(layout.images[name]!.configDigest);
      expect(diffIds, name).toEqual(layout.images[name]!.layers.map((l) => l.diffId));
    }
    // app and tools share the base layer: unpacked once.
    expect(out).toMatch(/; 3 layers unpacked, 3 already present$/m);
    expect(await ferry(root, ['fsck'])).toMatch(/0 problems/);
  });

  it('an OCI archive (podman save --format oci-archive) imports with the same config and diffIds', async () => {
    const archive = join(work, 'tools-oci.tar');
    await podman(['save', '-q', '--format', 'oci-archive', '-o', archive, `${registry.host}/test/tools`]);
    const root = join(work, 'store-oci');
    await ferry(root, ['import', archive]);
    const images = JSON.parse(await ferry(root, ['images', '--json'])) as Array<{ name: string; manifestDigest: string }>;
    expect(images).toHaveLength(1);
    const { json, diffIds } = await stored(root, images[0]!.manifestDigest.slice(7, 19));
    expect(json.config).toBe(layout.images.tools!.configDigest);
    expect(diffIds).toEqual(layout.images.tools!.layers.map((l) => l.diffId));
    expect(await ferry(root, ['fsck'])).toMatch(/0 problems/);
  });
});
