import { execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry, startFerryServe } from '../helpers/ferry.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { rewriteBundle, tarEntries } from '../bundle/fixtures.js';

/**
 * A multi-platform image keeps its index across the air gap: exported from a registry with
 * `--platform all --layers as-pulled`, the bundle carries the index; `push --bundle`, import then
 * `push` or `serve` from the store all give the source registry's index digest; `inspect` of the
 * imported name shows it. One platform of the index is still recorded, and pushed as itself. A
 * bundle written before the field existed still imports (no index, as before).
 */
const run = promisify(execFile);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let work: string;
let layout: TestLayout;
let source: RunningRegistry;
let dest: RunningRegistry;
let allBundle: string;
let armBundle: string;
let multiRef: string;

async function ferry(args: string[]): Promise<string> {
  const r = await runFerry(args, { env: { FERRY_CACHE_DIR: join(work, 'pull-cache') } });
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

type Json = Record<string, unknown>;
const json = async (args: string[]): Promise<Json> => JSON.parse(await ferry(args)) as Json;

/** The digest of what a tag (or digest) serves, as skopeo reads it. */
async function registryDigest(ref: string): Promise<string> {
  const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'buffer' });
  return sha256(stdout);
}

const amd64 = (): string => layout.images['multi@linux/amd64']!.manifestDigest;
const arm64 = (): string => layout.images['multi@linux/arm64']!.manifestDigest;

beforeAll(async () => {
  work = await makeTempDir('e2e-bundle-index');
  layout = await buildTestLayout(join(work, 'layout'));
  source = await startRegistry();
  dest = await startRegistry();
  await pushTestImages(layout, source);
  multiRef = `${source.host}/test/multi:latest`;
  expect(await registryDigest(multiRef)).toBe(layout.refs.multi);
  allBundle = join(work, 'all.tar.zst');
  armBundle = join(work, 'arm.tar.zst');
  await ferry(['export', '-q', '--platform', 'all', '--layers', 'as-pulled', '-o', allBundle, multiRef]);
  await ferry(['export', '-q', '--platform', 'linux/arm64', '--layers', 'as-pulled', '-o', armBundle, multiRef]);
}, 60_000);

afterAll(async () => {
  await source?.stop();
  await dest?.stop();
  await removeDir(work);
});

describe('the source index across the air gap', () => {
  it('export is deterministic and records the index; push --bundle gives the index and both manifests their source digests', async () => {
    const again = join(work, 'again.tar.zst');
    await ferry(['export', '-q', '--platform', 'all', '--layers', 'as-pulled', '-o', again, multiRef]);
    const { stdout: a } = await run('sha256sum', [allBundle]);
    const { stdout: b } = await run('sha256sum', [again]);
    expect(a.split(' ')[0]).toBe(b.split(' ')[0]);
    const { stdout: headerText } = await run('tar', ['--zstd', '-xOf', allBundle, 'ferry-bundle.json']);
    const header = JSON.parse(headerText) as { formatVersion: number; images: Array<{ manifestDigest: string; index?: { digest: string } }>; blobs: Array<{ digest: string }> };
    expect(header.formatVersion).toBe(1);
    expect(header.images.map((i) => [i.manifestDigest, i.index?.digest])).toEqual([[amd64(), layout.refs.multi], [arm64(), layout.refs.multi]]);
    expect(header.blobs.filter((b) => b.digest === layout.refs.multi)).toHaveLength(1);

    const out = await ferry(['push', '--bundle', allBundle, `${dest.host}/mirror`]);
    expect(out).toContain(`pushed ${dest.host}/mirror/test/multi:latest ${layout.refs.multi}`);
    // The source's bytes, not an index made anew (which may or may not hash the same).
    expect(out).not.toMatch(/->|index:|made for these images/);
    const pushed = `${dest.host}/mirror/test/multi`;
    expect(await registryDigest(`${pushed}:latest`)).toBe(await registryDigest(multiRef));
    for (const d of [amd64(), arm64()]) expect(await registryDigest(`${pushed}@${d}`)).toBe(await registryDigest(`${source.host}/test/multi@${d}`));
  });

  it('import: inspect shows the index like the registry; push and serve from the store keep its digest', async () => {
    const root = join(work, 'store');
    await ferry(['--root', root, 'import', allBundle]);
    const local = await json(['--root', root, 'inspect', multiRef]);
    expect(local).toEqual(await json(['--root', root, 'inspect', '--remote', multiRef]));
    expect(local.digest).toBe(layout.refs.multi);
    expect(local.platforms).toEqual(['linux/amd64', 'linux/arm64']);

    const out = await ferry(['--root', root, 'push', multiRef, `${dest.host}/from-store/multi:1`]);
    expect(out).toContain(`pushed ${dest.host}/from-store/multi:1 ${layout.refs.multi}`);
    expect(await registryDigest(`${dest.host}/from-store/multi:1`)).toBe(layout.refs.multi);

    const server = await startFerryServe(['--root', root, 'serve', '-q', '--listen', '127.0.0.1:0']);
    try {
      const head = await fetch(`http://${server.host}/v2/test/multi/manifests/latest`, { method: 'HEAD' });
      expect(head.headers.get('docker-content-digest')).toBe(layout.refs.multi);
      expect(await registryDigest(`${server.host}/test/multi:latest`)).toBe(layout.refs.multi);
    } finally {
      await stopServe(server.child);
    }
  });

  it('one platform: the index is recorded (inspect shows it), and the image is pushed as itself', async () => {
    const root = join(work, 'store-arm');
    await ferry(['--root', root, 'import', armBundle]);
    const local = await json(['--root', root, 'inspect', multiRef]);
    expect(local.digest).toBe(layout.refs.multi);
    expect((local.manifest as Json).digest).toBe(arm64());

    const out = await ferry(['push', '--bundle', armBundle, `${dest.host}/arm`]);
    expect(out).toContain(`pushed ${dest.host}/arm/test/multi:latest ${arm64()}`);
    expect(await registryDigest(`${dest.host}/arm/test/multi:latest`)).toBe(arm64());
    await ferry(['--root', root, 'push', multiRef, `${dest.host}/arm-store/multi:1`]);
    expect(await registryDigest(`${dest.host}/arm-store/multi:1`)).toBe(arm64());
  });

  it('a bundle without the field (as older ferries wrote) still imports: no index, the platforms the store holds', async () => {
    const old = join(work, 'old.tar.zst');
    // Blank out every images[].index in ferry-bundle.json with spaces: same length, valid JSON.
    await rewriteBundle(allBundle, old, (tar) => {
      const header = tarEntries(tar)[0]!;
      expect(header.name).toBe('ferry-bundle.json');
      const text = tar.subarray(header.dataOffset, header.dataOffset + header.size).toString('utf8');
      const blanked = text.replace(/,\n\s*"index": \{[^}]*\}/g, (m) => ' '.repeat(m.length));
      expect(blanked).not.toBe(text);
      expect(JSON.parse(blanked)).toMatchObject({ formatVersion: 1 });
      tar.write(blanked, header.dataOffset, 'utf8');
    });
    const root = join(work, 'store-old');
    await ferry(['--root', root, 'import', old]);
    const local = await json(['--root', root, 'inspect', multiRef]);
    expect(local.platforms).toEqual(['linux/amd64', 'linux/arm64']);
    expect([amd64(), arm64()]).toContain(local.digest);
    expect(await ferry(['--root', root, 'fsck'])).toMatch(/0 problems/);
  });
});


async function stopServe(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}
