import { cp, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forgetLayoutIndexes, listOciLayout, openOciLayout } from '../../src/archive/oci-layout.js';
import { digestHex, digestOf } from '../../src/oci/digest.js';
import { hostPlatform, parsePlatform } from '../../src/oci/platform.js';
import { formatReference } from '../../src/oci/reference.js';
import { buildTestLayout, OCI_INDEX, OCI_MANIFEST, REF_NAME_ANNOTATION, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { collect, failsWith, readAllLayers, sh } from './fixtures.js';

let tmp: string;
let layout: TestLayout;
const hostArch = hostPlatform().architecture;

beforeAll(async () => {
  tmp = await makeTempDir('oci-layout');
  layout = await buildTestLayout(join(tmp, 'layout'));
});
afterAll(async () => {
  await removeDir(tmp);
});

let copies = 0;
/** A private copy of the layout to damage. */
async function copyLayout(): Promise<string> {
  const dir = join(tmp, `copy-${copies++}`);
  await cp(layout.dir, dir, { recursive: true });
  return dir;
}

function blobFile(dir: string, digest: string): string {
  return join(dir, 'blobs', 'sha256', digestHex(digest as never));
}

async function editIndex(dir: string, edit: (index: { manifests: Array<Record<string, unknown>> }) => void): Promise<void> {
  const path = join(dir, 'index.json');
  const index = JSON.parse(await readFile(path, 'utf8')) as { manifests: Array<Record<string, unknown>> };
  edit(index);
  await writeFile(path, JSON.stringify(index));
}

describe('openOciLayout', () => {
  it('reads an image by its short ref name, with verified manifest, config and layers', async () => {
    const resolved = await openOciLayout(layout.dir, 'app');
    expect(resolved.index).toBeUndefined();
    expect(resolved.images).toHaveLength(1);
    const image = resolved.images[0]!;
    const want = layout.images.app!;
    expect(image.digest).toBe(want.manifestDigest);
    expect(digestOf(image.rawManifest)).toBe(image.digest);
    expect(image.configDigest).toBe(want.configDigest);
    expect(digestOf(image.rawConfig)).toBe(image.configDigest);
    expect(image.mediaType).toBe(OCI_MANIFEST);
    expect(image.ref && formatReference(image.ref)).toBe('docker.io/library/app:latest');
    expect(image.platform).toEqual({ os: 'linux', architecture: hostArch });
    expect(image.config.config?.Entrypoint).toEqual(['/opt/app/run.sh']);
    expect(image.layers.map((l) => l.descriptor.digest)).toEqual(want.layers.map((l) => l.digest));
    expect(await readAllLayers(image)).toEqual(want.layers.map((l) => l.diffId));
  });

  it('selects by a full reference that normalises to the name, and by digest', async () => {
    const byRef = await openOciLayout(layout.dir, 'docker.io/library/tools:latest');
    expect(byRef.images[0]!.digest).toBe(layout.refs.tools);
    const byDigest = await openOciLayout(layout.dir, layout.refs.base);
    expect(byDigest.images[0]!.digest).toBe(layout.refs.base);
    expect(byDigest.images[0]!.ref && formatReference(byDigest.images[0]!.ref)).toBe('docker.io/library/base:latest');
  });

  it('a digest inside a nested index picks that platform image', async () => {
    const arm = layout.images['multi@linux/arm64']!;
    const r = await openOciLayout(layout.dir, arm.manifestDigest);
    expect(r.images.map((i) => i.digest)).toEqual([arm.manifestDigest]);
    expect(r.images[0]!.platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
  });

  it('an index resolves to one image per requested platform and keeps the index bytes', async () => {
    const amd = layout.images['multi@linux/amd64']!;
    const arm = layout.images['multi@linux/arm64']!;
    const both = await openOciLayout(layout.dir, 'multi', 'all');
    expect(both.images.map((i) => i.digest)).toEqual([amd.manifestDigest, arm.manifestDigest]);
    expect(both.index?.digest).toBe(layout.refs.multi);
    expect(both.index?.mediaType).toBe(OCI_INDEX);
    expect(digestOf(both.index!.raw)).toBe(layout.refs.multi);

    const armOnly = await openOciLayout(layout.dir, 'multi', [parsePlatform('linux/aarch64')]);
    expect(armOnly.images.map((i) => i.digest)).toEqual([arm.manifestDigest]);
    expect(await readAllLayers(armOnly.images[0]!)).toEqual(arm.layers.map((l) => l.diffId));

    // Asking twice for the same platform gives it once.
    const twice = await openOciLayout(layout.dir, 'multi', [parsePlatform('linux/arm64'), parsePlatform('linux/arm64/v8')]);
    expect(twice.images).toHaveLength(1);
  });

  it('defaults to the host platform', async () => {
    const r = await openOciLayout(layout.dir, 'multi');
    expect(r.images).toHaveLength(1);
    expect(r.images[0]!.platform.architecture).toBe(hostArch === 'arm64' ? 'arm64' : 'amd64');
  });

  it('an absent platform is PLATFORM_NOT_FOUND listing what there is', async () => {
    const msg = await failsWith(openOciLayout(layout.dir, 'multi', [parsePlatform('linux/s390x')]), 'PLATFORM_NOT_FOUND');
    expect(msg).toBe(`OCI layout ${layout.dir} image multi: no image for platform linux/s390x; it has linux/amd64, linux/arm64`);
  });

  it('a single-platform image is taken whatever platform is asked for', async () => {
    const r = await openOciLayout(layout.dir, 'base', [parsePlatform('linux/s390x')]);
    expect(r.images[0]!.digest).toBe(layout.refs.base);
  });

  it('several entries need a selector; the error lists their names', async () => {
    const msg = await failsWith(openOciLayout(layout.dir), 'USAGE');
    expect(msg).toBe(`OCI layout ${layout.dir}: holds 4 images; say which one: base, app, tools, multi`);
    expect(await failsWith(openOciLayout(layout.dir, 'nope'), 'NOT_FOUND')).toBe(`OCI layout ${layout.dir}: no image named "nope"`);
    expect(await failsWith(openOciLayout(layout.dir, digestOf('nothing')), 'NOT_FOUND')).toContain('no image with digest sha256:');
  });

  it('entries sharing one name are one image in several platforms (the bundle form)', async () => {
    const dir = await copyLayout();
    const amd = layout.images['multi@linux/amd64']!;
    const arm = layout.images['multi@linux/arm64']!;
    await editIndex(dir, (index) => {
      index.manifests = [amd, arm].map((m, i) => ({
        mediaType: OCI_MANIFEST,
        digest: m.manifestDigest,
        size: m.manifestSize,
        // Only the first names its platform in the descriptor; the second is learnt from its config.
        ...(i === 0 ? { platform: { os: 'linux', architecture: 'amd64' } } : {}),
        annotations: { [REF_NAME_ANNOTATION]: 'registry.example:5000/team/multi:2' },
      }));
    });
    const r = await openOciLayout(dir, undefined, [parsePlatform('linux/arm64')]);
    expect(r.images.map((i) => i.digest)).toEqual([arm.manifestDigest]);
    expect(r.index).toBeUndefined();
    expect(formatReference(r.images[0]!.ref!)).toBe('registry.example:5000/team/multi:2');
    const all = await openOciLayout(dir, 'registry.example:5000/team/multi:2', 'all');
    expect(all.images).toHaveLength(2);
  });

  it('an index.json changed between opens is read again, even at the same size and modification time', async () => {
    const dir = await copyLayout();
    const path = join(dir, 'index.json');
    // A whole second, so that setting it again restores it to the nanosecond.
    await utimes(path, 1_700_000_000, 1_700_000_000);
    expect((await openOciLayout(dir, 'app')).images[0]!.digest).toBe(layout.refs.app);
    const before = await stat(path, { bigint: true });
    await editIndex(dir, (index) => {
      for (const m of index.manifests) {
        const annotations = m.annotations as Record<string, string>;
        if (annotations[REF_NAME_ANNOTATION] === 'app') annotations[REF_NAME_ANNOTATION] = 'apq';
      }
    });
    await utimes(path, 1_700_000_000, 1_700_000_000);
    const after = await stat(path, { bigint: true });
    expect([after.ino, after.size, after.mtimeNs]).toEqual([before.ino, before.size, before.mtimeNs]);
    expect((await openOciLayout(dir, 'apq')).images[0]!.digest).toBe(layout.refs.app);
    expect(await failsWith(openOciLayout(dir, 'app'), 'NOT_FOUND')).toBe(`OCI layout ${dir}: no image named "app"`);
    expect((await listOciLayout(dir)).map((e) => e.name)).toEqual(['base', 'apq', 'tools', 'multi']);
  });

  it('images opened before its parsed index is forgotten still read; the next open reads index.json again', async () => {
    const dir = await copyLayout();
    const app = (await openOciLayout(dir, 'app')).images[0]!;
    forgetLayoutIndexes();
    await editIndex(dir, (index) => {
      for (const m of index.manifests) {
        const annotations = m.annotations as Record<string, string>;
        if (annotations[REF_NAME_ANNOTATION] === 'app') annotations[REF_NAME_ANNOTATION] = 'apr';
      }
    });
    expect((await readAllLayers(app)).length).toBe(app.layers.length);
    expect(app.config.rootfs.diff_ids).toEqual(app.layers.map((l) => l.diffId));
    expect((await openOciLayout(dir, 'apr')).images[0]!.digest).toBe(app.digest);
    forgetLayoutIndexes();
    expect(await failsWith(openOciLayout(dir, 'app'), 'NOT_FOUND')).toBe(`OCI layout ${dir}: no image named "app"`);
  });

  it('a layout of many images lists ten of their names in a message, and how many more', async () => {
    const dir = await copyLayout();
    await editIndex(dir, (index) => {
      const base = index.manifests[0]!;
      index.manifests = Array.from({ length: 25 }, (_, i) => ({ ...base, annotations: { [REF_NAME_ANNOTATION]: `img-${i + 1}` } }));
    });
    const names = Array.from({ length: 10 }, (_, i) => `img-${i + 1}`).join(', ');
    expect(await failsWith(openOciLayout(dir), 'USAGE')).toBe(`OCI layout ${dir}: holds 25 images; say which one: ${names} and 15 more (its index.json lists them all)`);
    expect(await failsWith(openOciLayout(dir, 'img-26'), 'NOT_FOUND')).toBe(`OCI layout ${dir}: no image named "img-26"`);
    expect((await openOciLayout(dir, 'img-25')).images[0]!.digest).toBe(layout.refs.base);
  });

  it('lists the entries', async () => {
    const entries = await listOciLayout(layout.dir);
    expect(entries.map((e) => e.name)).toEqual(['base', 'app', 'tools', 'multi']);
    expect(entries[3]!.descriptor.mediaType).toBe(OCI_INDEX);
  });

  it('reads a layout written by skopeo (a docker image converted) and by umoci', async () => {
    const skopeoDir = join(tmp, 'skopeo-layout');
    await sh(`skopeo copy -q oci:${layout.dir}:tools oci:${skopeoDir}:tools:1`);
    const r = await openOciLayout(skopeoDir, 'tools:1');
    expect(r.images[0]!.digest).toBe(layout.refs.tools);
    expect(await readAllLayers(r.images[0]!)).toEqual(layout.images.tools!.layers.map((l) => l.diffId));

    // umoci: unpack, change a file, repack: a new layer umoci wrote itself.
    const umociDir = join(tmp, 'umoci-layout');
    await sh(`skopeo copy -q oci:${layout.dir}:base oci:${umociDir}:base`);
    await sh(`umoci unpack --rootless --image ${umociDir}:base ${tmp}/bundle`);
    await writeFile(join(tmp, 'bundle', 'rootfs', 'etc', 'umoci-was-here'), 'yes\n');
    await rm(join(tmp, 'bundle', 'rootfs', 'etc', 'hostname'));
    await sh(`umoci repack --image ${umociDir}:changed ${tmp}/bundle`);
    const changed = await openOciLayout(umociDir, 'changed');
    expect(changed.images[0]!.layers).toHaveLength(2);
    const diffIds = await readAllLayers(changed.images[0]!);
    expect(diffIds[0]).toBe(layout.images.base!.layers[0]!.diffId);
    const tar = (await collect(await changed.images[0]!.layers[1]!.tar())).toString('latin1');
    expect(tar).toContain('etc/umoci-was-here');
    expect(tar).toContain('etc/.wh.hostname');
  });
});

describe('openOciLayout: damaged and hostile layouts', () => {
  it('no oci-layout file: not an OCI image layout', async () => {
    const dir = await copyLayout();
    await rm(join(dir, 'oci-layout'));
    expect(await failsWith(openOciLayout(dir, 'app'), 'INVALID_MANIFEST')).toBe(`OCI layout ${dir}: not an OCI image layout (no oci-layout file)`);
  });

  it('a directory that does not exist', async () => {
    const dir = join(tmp, 'nowhere');
    expect(await failsWith(openOciLayout(dir, 'app'), 'INVALID_MANIFEST')).toContain(`OCI layout ${dir}: not an OCI image layout`);
  });

  it('an unknown layout version is UNSUPPORTED', async () => {
    const dir = await copyLayout();
    await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"2.0.0"}');
    expect(await failsWith(openOciLayout(dir, 'app'), 'UNSUPPORTED')).toBe(`OCI layout ${dir}: unsupported OCI layout version "2.0.0"`);
  });

  it('index.json that is not JSON, or missing', async () => {
    const dir = await copyLayout();
    await writeFile(join(dir, 'index.json'), '{"schemaVersion":2,');
    expect(await failsWith(openOciLayout(dir, 'app'), 'INVALID_MANIFEST')).toBe(`OCI layout ${dir} index.json: not valid JSON`);
    await rm(join(dir, 'index.json'));
    expect(await failsWith(openOciLayout(dir, 'app'), 'NOT_FOUND')).toBe(`OCI layout ${dir}: index.json is missing`);
  });

  it('a missing manifest blob is NOT_FOUND naming the path', async () => {
    const dir = await copyLayout();
    await rm(blobFile(dir, layout.refs.app!));
    const msg = await failsWith(openOciLayout(dir, 'app'), 'NOT_FOUND');
    expect(msg).toBe(`OCI layout ${dir}: blobs/sha256/${digestHex(layout.refs.app as never)} is missing`);
  });

  it('a missing layer blob is found when opening, naming the layer', async () => {
    const dir = await copyLayout();
    const layer = layout.images.app!.layers[1]!;
    await rm(blobFile(dir, layer.digest));
    const msg = await failsWith(openOciLayout(dir, 'app'), 'NOT_FOUND');
    expect(msg).toBe(`OCI layout ${dir} image app: layer 1 blob ${layer.digest} is missing (blobs/sha256/${digestHex(layer.digest as never)})`);
  });

  it('a tampered manifest is a DIGEST_MISMATCH', async () => {
    const dir = await copyLayout();
    const path = blobFile(dir, layout.refs.app!);
    const bytes = await readFile(path);
    await writeFile(path, Buffer.from(bytes.toString('latin1').replace('"schemaVersion":2', '"schemaVersion":2 '), 'latin1').subarray(0, bytes.length));
    const msg = await failsWith(openOciLayout(dir, 'app'), 'DIGEST_MISMATCH');
    expect(msg).toContain(`OCI layout ${dir} image app: blob ${layout.refs.app}: digest mismatch`);
  });

  it('a manifest of the wrong size is a SIZE_MISMATCH', async () => {
    const dir = await copyLayout();
    await writeFile(blobFile(dir, layout.refs.app!), ' ', { flag: 'a' });
    expect(await failsWith(openOciLayout(dir, 'app'), 'SIZE_MISMATCH')).toContain('its descriptor says');
  });

  it('a tampered layer fails its stream with DIGEST_MISMATCH', async () => {
    const dir = await copyLayout();
    const layer = layout.images.tools!.layers[1]!;
    const path = blobFile(dir, layer.digest);
    const bytes = await readFile(path);
    bytes[bytes.length - 12] = bytes[bytes.length - 12]! ^ 0x55; // inside the deflate data / trailer
    await writeFile(path, bytes);
    const image = (await openOciLayout(dir, 'tools')).images[0]!;
    const err = await collect(await image.layers[1]!.blob()).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('DIGEST_MISMATCH');
    expect((err as Error).message).toContain(`OCI layout ${dir} image tools blob ${layer.digest}`);
    await expect(collect(await image.layers[1]!.tar())).rejects.toThrow();
  });

  it('a truncated layer is a SIZE_MISMATCH when opening', async () => {
    const dir = await copyLayout();
    const layer = layout.images.tools!.layers[1]!;
    await truncate(blobFile(dir, layer.digest), 10);
    expect(await failsWith(openOciLayout(dir, 'tools'), 'SIZE_MISMATCH')).toContain(`layer 1 blob ${layer.digest} is 10 bytes, the manifest says ${layer.size}`);
  });

  it('a descriptor digest that tries to climb out is refused before any path is built', async () => {
    const dir = await copyLayout();
    await editIndex(dir, (index) => {
      index.manifests[0]!.digest = 'sha256:../../../../etc/passwd';
    });
    expect(await failsWith(openOciLayout(dir, 'base'), 'INVALID_MANIFEST')).toContain('bad digest "sha256:../../../../etc/passwd"');
  });

  it('indexes nested deeper than the limit are refused, not walked without end', async () => {
    const dir = await copyLayout();
    // Content addressing rules out a true self-reference; a long chain is the attack that remains.
    let child = { mediaType: OCI_INDEX, digest: layout.refs.multi!, size: (await readFile(blobFile(dir, layout.refs.multi!))).length };
    for (let i = 0; i < 6; i++) {
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [child] }));
      const digest = digestOf(bytes);
      await writeFile(blobFile(dir, digest), bytes);
      child = { mediaType: OCI_INDEX, digest, size: bytes.length };
    }
    await editIndex(dir, (index) => {
      index.manifests = [{ ...child, annotations: { [REF_NAME_ANNOTATION]: 'deep' } }];
    });
    expect(await failsWith(openOciLayout(dir, 'deep', 'all'), 'UNSUPPORTED')).toContain('indexes nested more than 4 deep');
  });

  it('a schema 1 manifest is refused with a clear message', async () => {
    const dir = await copyLayout();
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'old', tag: '1', fsLayers: [] }));
    const digest = digestOf(bytes);
    await writeFile(blobFile(dir, digest), bytes);
    await editIndex(dir, (index) => {
      index.manifests = [
        { mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws', digest, size: bytes.length, annotations: { [REF_NAME_ANNOTATION]: 'old' } },
      ];
    });
    expect(await failsWith(openOciLayout(dir), 'UNSUPPORTED')).toContain('old');
  });

  it('a config whose diff_ids do not match the layers is refused', async () => {
    const dir = await copyLayout();
    const app = layout.images.app!;
    const config = JSON.parse(await readFile(blobFile(dir, app.configDigest), 'utf8')) as { rootfs: { diff_ids: string[] } };
    config.rootfs.diff_ids.pop();
    const configBytes = Buffer.from(JSON.stringify(config));
    await writeFile(blobFile(dir, digestOf(configBytes)), configBytes);
    const manifest = JSON.parse(await readFile(blobFile(dir, app.manifestDigest), 'utf8')) as { config: Record<string, unknown> };
    manifest.config = { ...manifest.config, digest: digestOf(configBytes), size: configBytes.length };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    await writeFile(blobFile(dir, digestOf(manifestBytes)), manifestBytes);
    await editIndex(dir, (index) => {
      index.manifests = [{ mediaType: OCI_MANIFEST, digest: digestOf(manifestBytes), size: manifestBytes.length }];
    });
    expect(await failsWith(openOciLayout(dir), 'INVALID_MANIFEST')).toContain('manifest lists 2 layers, config has 1 diff_ids');
  });
});
