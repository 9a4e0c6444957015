import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openOciLayout } from '../../src/archive/index.js';
import { parseHeader, serializeHeader, type BundleHeader } from '../../src/bundle/format.js';
import { readBundleHeader } from '../../src/bundle/read-bundle.js';
import { verifyBundle } from '../../src/bundle/verify-bundle.js';
import { type BundleSource } from '../../src/bundle/write-bundle.js';
import { writeBundle } from '../../src/verbs/export.js';
import { isFerryError } from '../../src/errors.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { refOf, run, sha256OfFile } from './fixtures.js';

/**
 * The multi-platform index an image came from travels in the bundle (an optional addition to
 * format v1): its bytes once as a blob, recorded per image; index.json keeps one entry per image
 * and platform; bundles stay deterministic; headers without the field still read.
 */
let dir: string;
let layout: TestLayout;

const hex = (d: string): string => d.slice('sha256:'.length);

/** multi from the test layout, with its index, for these platforms. */
async function multiSources(platforms: 'all' | string[] = 'all'): Promise<BundleSource[]> {
  const resolved = await openOciLayout(layout.dir, 'multi', platforms === 'all' ? 'all' : platforms.map(parsePlatform));
  expect(resolved.index?.digest).toBe(layout.refs.multi);
  return resolved.images.map((image) => ({ ref: refOf('multi'), image, index: resolved.index! }));
}

beforeAll(async () => {
  dir = await makeTempDir('bundle-index');
  layout = await buildTestLayout(join(dir, 'layout'));
});

afterAll(async () => {
  await removeDir(dir);
});

describe('the source index in a bundle', () => {
  it('is stored once as a blob before the manifests, recorded by every image it lists, and not in index.json', async () => {
    const bundle = join(dir, 'multi.tar.zst');
    const summary = await writeBundle(await multiSources(), bundle, { layers: 'as-pulled' });
    const header = summary.header;
    const indexBytes = await readFile(join(layout.dir, 'blobs/sha256', hex(layout.refs.multi!)));
    const want = { digest: layout.refs.multi, mediaType: 'application/vnd.oci.image.index.v1+json', size: indexBytes.length };
    expect(header.images.map((i) => i.index)).toEqual([want, want]);
    expect(header.blobs.filter((b) => b.digest === layout.refs.multi)).toEqual([{ ...want, kind: 'manifest', encoding: 'as-pulled' }]);
    expect(header.blobs[0]!.digest).toBe(layout.refs.multi);
    expect(header.formatVersion).toBe(1);
    expect(header.totals.pulledBytes).toBe(header.blobs.reduce((s, b) => s + b.size, 0));

    const x = join(dir, 'x-multi');
    await run('mkdir', ['-p', x]);
    await run('tar', ['--zstd', '-xf', bundle, '-C', x]);
    // The bytes as the layout holds them, under their digest.
    const carried = await readFile(join(x, 'blobs/sha256', hex(layout.refs.multi!)));
    expect(carried.equals(indexBytes)).toBe(true);
    const index = JSON.parse(await readFile(join(x, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; platform: { architecture: string } }> };
    expect(index.manifests.map((m) => [m.platform.architecture, m.digest])).toEqual([
      ['amd64', layout.images['multi@linux/amd64']!.manifestDigest],
      ['arm64', layout.images['multi@linux/arm64']!.manifestDigest],
    ]);
    // skopeo still finds the name (first entry: amd64).
    const inspect = JSON.parse((await run('skopeo', ['inspect', `oci:${x}:${refOf('multi')}`])).stdout) as { Digest: string };
    expect(inspect.Digest).toBe(layout.images['multi@linux/amd64']!.manifestDigest);
    expect((await verifyBundle(bundle)).problems).toEqual([]);
  });

  it('keeps bundles byte-identical, whatever the source order; raw bundles carry it too', async () => {
    const sources = await multiSources();
    const a = join(dir, 'det-a.tar.zst');
    const b = join(dir, 'det-b.tar.zst');
    await writeBundle(sources, a);
    await writeBundle([...sources].reverse(), b);
    expect(await sha256OfFile(a)).toBe(await sha256OfFile(b));
    const { header } = await readBundleHeader(a);
    expect(header.layers).toBe('raw');
    expect(header.images.every((i) => i.index?.digest === layout.refs.multi)).toBe(true);
    expect(header.blobs.filter((blob) => blob.digest === layout.refs.multi)).toHaveLength(1);
  });

  it('records a partial index (one platform) as is; drops it for an image the index does not list', async () => {
    const arm = await multiSources(['linux/arm64']);
    const partial = await writeBundle(arm, join(dir, 'arm.tar.zst'), { layers: 'as-pulled' });
    expect(partial.header.images).toHaveLength(1);
    expect(partial.header.images[0]!.index?.digest).toBe(layout.refs.multi);
    expect(partial.header.blobs.some((b) => b.digest === layout.refs.multi)).toBe(true);

    const app = await openOciLayout(layout.dir, 'app', 'all');
    const stray = await writeBundle([{ ref: refOf('app'), image: app.images[0]!, index: arm[0]!.index! }], join(dir, 'stray.tar.zst'));
    expect(stray.header.images[0]!.index).toBeUndefined();
    expect(stray.header.blobs.some((b) => b.digest === layout.refs.multi)).toBe(false);
  });

  it('refuses index bytes that do not hash to the digest', async () => {
    const [first] = await multiSources();
    const forged = { ...first!, index: { ...first!.index!, raw: Buffer.concat([first!.index!.raw, Buffer.from(' ')]) } };
    const err = await writeBundle([forged], join(dir, 'forged.tar.zst')).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect((err as Error).message).toMatch(new RegExp(`index ${layout.refs.multi} of ${refOf('multi')}`));
  });

  it('headers without the field read as before; a recorded index must be among the blobs', async () => {
    const { header } = await readBundleHeader(join(dir, 'multi.tar.zst'));
    const old: BundleHeader = { ...header, images: header.images.map(({ index: _index, ...rest }) => rest), blobs: header.blobs.filter((b) => b.digest !== layout.refs.multi) };
    const parsed = parseHeader(serializeHeader(old), 'old.tar.zst');
    expect(parsed.images.every((i) => i.index === undefined)).toBe(true);
    const dangling = { ...header, blobs: old.blobs };
    expect(() => parseHeader(serializeHeader(dangling), 'dangling.tar.zst')).toThrow(/images\[0\]\.index sha256:\S+ is not among the blobs/);
    const bad = JSON.parse(serializeHeader(header).toString('utf8')) as { images: Array<{ index: unknown }> };
    bad.images[0]!.index = { digest: 'sha256:nope', mediaType: 'x', size: 1 };
    expect(() => parseHeader(Buffer.from(JSON.stringify(bad)), 'bad.tar.zst')).toThrow(/images\[0\]\.index\.digest is not a digest/);
    expect(createHash('sha256').update(serializeHeader(parsed)).digest('hex')).toBe(createHash('sha256').update(serializeHeader(old)).digest('hex'));
  });
});
