import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex, type Digest } from '../../src/oci/digest.js';
import { runFerry, type FerryResult } from '../helpers/ferry.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * How commands find store images: `ferry inspect` prints the same JSON for a store image as for
 * the registry image it came from; a bare name is looked up by docker normalisation, an image ID
 * (a manifest or config digest prefix) works for inspect, run, tag and rmi; a name the store does
 * not hold falls back to the registry, an ID never does.
 */
let work: string;
let layout: TestLayout;
let registry: RunningRegistry;
let root: string;

async function ferry(args: string[]): Promise<FerryResult> {
  return runFerry(['--root', root, ...args]);
}

async function ok(args: string[]): Promise<string> {
  const r = await ferry(args);
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

type Json = Record<string, unknown>;
const json = async (args: string[]): Promise<Json> => JSON.parse(await ok(args)) as Json;
const hex = (d: string): string => digestHex(d as Digest);

beforeAll(async () => {
  work = await makeTempDir('store-lookup');
  layout = await buildTestLayout(join(work, 'layout'));
  registry = await startRegistry();
  await pushTestImages(layout, registry);
  root = join(work, 'store');
  // app and multi (both platforms) by way of a bundle, as on an air-gapped host; multi again from
  // the OCI layout, which keeps its index.
  const bundle = join(work, 'b.tar.zst');
  const e = await runFerry(['export', '-q', '--platform', 'all', '-o', bundle, `${registry.host}/test/app`, `${registry.host}/test/multi`]);
  expect(e.code, e.stderr).toBe(0);
  await ok(['import', bundle]);
  await ok(['import', '--platform', 'linux/amd64,linux/arm64', `oci:${layout.dir}:multi`]);
}, 60_000);
afterAll(async () => {
  await registry?.stop();
  await removeDir(work);
});

describe('ferry inspect of store images', () => {
  it('prints the same JSON as for the registry image (single-platform, and one platform of an index)', async () => {
    const app = `${registry.host}/test/app`;
    expect(await json(['inspect', app])).toEqual(await json(['inspect', '--remote', app]));
    const multi = `${registry.host}/test/multi`;
    const arm = await json(['inspect', '--platform', 'linux/arm64', multi]);
    expect(arm).toEqual(await json(['inspect', '--remote', '--platform', 'linux/arm64', multi]));
    expect(arm.digest).toBe(layout.images['multi@linux/arm64']!.manifestDigest);
    // --raw: the manifest bytes as stored are the bytes the registry serves.
    expect(await ok(['inspect', '--raw', app])).toBe(await ok(['inspect', '--raw', '--remote', app]));
  });

  it('an image imported with its index (from a layout or a bundle) inspects as the index, like the registry', async () => {
    const fromLayout = await json(['inspect', 'multi']);
    const { name: _local, ...restLocal } = fromLayout;
    const { name: _remote, ...restRemote } = await json(['inspect', '--remote', `${registry.host}/test/multi`]);
    expect(restLocal).toEqual(restRemote);
    expect(fromLayout.name).toBe('docker.io/library/multi:latest');
    expect(fromLayout.digest).toBe(layout.refs.multi);
    // The bundle carries the registry's index too (a bundle without it: test/e2e/bundle-index.test.ts).
    const fromBundle = await json(['inspect', `${registry.host}/test/multi`]);
    expect(fromBundle).toEqual(await json(['inspect', '--remote', `${registry.host}/test/multi`]));
    expect(fromBundle.digest).toBe(layout.refs.multi);
    expect(fromBundle.platforms).toEqual(['linux/amd64', 'linux/arm64']);
  });

  it('finds a bare name by docker normalisation, and an image ID by manifest or config digest prefix', async () => {
    await ok(['import', `oci:${layout.dir}:app`]);
    const byName = await json(['inspect', 'app']);
    expect(byName.name).toBe('docker.io/library/app:latest');
    expect(byName.digest).toBe(layout.refs.app);
    const app = layout.images.app!;
    for (const id of [hex(app.manifestDigest).slice(0, 12), `sha256:${hex(app.manifestDigest).slice(0, 16)}`, hex(app.configDigest).slice(0, 12), app.configDigest]) {
      const byId = await json(['inspect', id]);
      expect(byId.digest, id).toBe(app.manifestDigest);
      expect(byId.config, id).toBe(app.configDigest);
    }
  });

  it('a name the store does not hold comes from the registry; an unknown ID is not found without asking anyone', async () => {
    const tools = await json(['inspect', `${registry.host}/test/tools`]);
    expect(tools.digest).toBe(layout.refs.tools);
    const r = await ferry(['inspect', `sha256:${'0'.repeat(12)}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ferry: inspect sha256:000000000000: no image with this ID in the store/);
    // The registry's answer stays the message; the hint says the store had none either.
    const missing = await ferry(['inspect', `${registry.host}/test/missing:1`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/not found \(HTTP 404/);
    expect(missing.stderr).toMatch(/the store has no image .*test\/missing:1 either/);
    expect(missing.stderr).not.toMatch(/\n\s+at /);
  });

  it('refuses an ID prefix that fits two images', async () => {
    const held = new Set((JSON.parse(await ok(['images', '--json'])) as Array<{ manifestDigest: string }>).map((i) => i.manifestDigest));
    const images = Object.values(layout.images).filter((i) => held.has(i.manifestDigest));
    expect(images.length).toBeGreaterThanOrEqual(3);
    // A one-digit prefix of two different images' digests (the test images' digests are fixed).
    // multi's platforms share their index in the store (layout and bundle alike): one image.
    const multi = new Set(['multi@linux/amd64', 'multi@linux/arm64'].map((k) => layout.images[k]!.manifestDigest));
    const imageKey = (i: { manifestDigest: string }): string => (multi.has(i.manifestDigest) ? 'multi' : i.manifestDigest);
    const fits = (c: string): Set<string> => new Set(images.filter((i) => hex(i.manifestDigest).startsWith(c) || hex(i.configDigest).startsWith(c)).map(imageKey));
    const shared = [...'0123456789abcdef'].find((c) => fits(c).size > 1);
    expect(shared).toBeDefined();
    const r = await ferry(['inspect', shared!]);
    expect(r.code, r.stdout).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^ferry: image ID ${shared!} is ambiguous: it fits `));
    expect((await ferry(['rmi', shared!])).code).toBe(2);
    expect((await ferry(['tag', `sha256:${shared!}`, 'never:1'])).code).toBe(2);
  });
});

describe('image IDs for run, tag and rmi', () => {
  it('run, tag and rmi take an image ID prefix; rmi of an ID with two names needs -f', async () => {
    const app = layout.images.app!;
    const id = hex(app.configDigest).slice(0, 12);
    const r = await ferry(['run', '--rm', id, 'echo', 'ran by ID']);
    expect(r.code, r.stderr).toBe(0);
    // app's Entrypoint echoes its arguments.
    expect(r.stdout).toMatch(/^app says: echo ran by ID\n/);
    await ok(['tag', hex(app.manifestDigest).slice(0, 10), 'example.com/copy:1']);
    const images = JSON.parse(await ok(['images', '--json'])) as Array<{ name: string; manifestDigest: string }>;
    expect(images.filter((i) => i.manifestDigest === app.manifestDigest).map((i) => i.name).sort()).toEqual(
      ['docker.io/library/app:latest', `${registry.host}/test/app:latest`, 'example.com/copy:1'].sort(),
    );
    const refused = await ferry(['rmi', id]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/the image has 3 names/);
    expect(refused.stderr).toMatch(/all at once with -f/);
    const removed = await ok(['rmi', '-f', id]);
    expect(removed.match(/^untagged: /gm)).toHaveLength(3);
    const after = JSON.parse(await ok(['images', '--json'])) as Array<{ manifestDigest: string }>;
    expect(after.some((i) => i.manifestDigest === app.manifestDigest)).toBe(false);
    expect(await ok(['fsck'])).toMatch(/0 problems/);
  });
});
