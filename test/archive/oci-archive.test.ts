import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listOciArchive, openOciArchive } from '../../src/archive/oci-archive.js';
import { digestHex, digestOf } from '../../src/oci/digest.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { formatReference } from '../../src/oci/reference.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { collect, failsWith, readAllLayers, sh, tarOf } from './fixtures.js';

let tmp: string;
let layout: TestLayout;
let appArchive: string;
let wholeLayout: string;

beforeAll(async () => {
  tmp = await makeTempDir('oci-archive');
  layout = await buildTestLayout(join(tmp, 'layout'));
  appArchive = join(tmp, 'app-oci.tar');
  await sh(`skopeo copy -q oci:${layout.dir}:app oci-archive:${appArchive}:localhost:5000/team/app:1`);
  // The whole test layout (4 entries, one a multi-platform index) tarred as GNU tar would.
  wholeLayout = join(tmp, 'layout.tar');
  await sh(`tar -cf ${wholeLayout} -C ${layout.dir} .`);
});
afterAll(async () => {
  await removeDir(tmp);
});

describe('openOciArchive', () => {
  it('reads skopeo oci-archive output in place, manifest digest preserved', async () => {
    const opened = await openOciArchive(appArchive);
    const image = opened.images[0]!;
    const app = layout.images.app!;
    expect(image.digest).toBe(app.manifestDigest);
    expect(image.configDigest).toBe(app.configDigest);
    expect(formatReference(image.ref!)).toBe('localhost:5000/team/app:1');
    expect(await readAllLayers(image)).toEqual(app.layers.map((l) => l.diffId));
    await opened.close();
    expect((await openOciArchive(appArchive, 'localhost:5000/team/app:1')).images[0]!.digest).toBe(app.manifestDigest);
  });

  it('reads a tar of a whole layout ("./"-prefixed names): selection, platforms, index', async () => {
    const msg = await failsWith(openOciArchive(wholeLayout), 'USAGE');
    expect(msg).toBe(`oci-archive ${wholeLayout}: holds 4 images; say which one: base, app, tools, multi`);
    const multi = await openOciArchive(wholeLayout, 'multi', [parsePlatform('linux/arm64'), parsePlatform('linux/amd64')]);
    expect(multi.index?.digest).toBe(layout.refs.multi);
    expect(multi.images.map((i) => i.digest)).toEqual([
      layout.images['multi@linux/arm64']!.manifestDigest,
      layout.images['multi@linux/amd64']!.manifestDigest,
    ]);
    for (const image of multi.images) await readAllLayers(image);
    const entries = await listOciArchive(wholeLayout);
    expect(entries.map((e) => e.name)).toEqual(['base', 'app', 'tools', 'multi']);
  });

  it.each([
    ['gzip', 'gzip -c'],
    ['zstd', 'zstd -q -c'],
  ])('reads a %s-compressed archive; close() removes the temp copy', async (kind, cmd) => {
    const file = join(tmp, `layout.tar.${kind}`);
    await sh(`${cmd} ${wholeLayout} > ${file}`);
    const tmpDir = join(tmp, `tmp-${kind}`);
    await mkdir(tmpDir);
    const opened = await openOciArchive(file, 'tools', undefined, { tmpDir });
    expect(await readdir(tmpDir)).toHaveLength(1);
    expect(await readAllLayers(opened.images[0]!)).toEqual(layout.images.tools!.layers.map((l) => l.diffId));
    await opened.close();
    expect(await readdir(tmpDir)).toEqual([]);
  });

  it('a failed open leaves no temp copy behind', async () => {
    const file = join(tmp, 'layout-for-fail.tar.gz');
    await sh(`gzip -c ${wholeLayout} > ${file}`);
    const tmpDir = join(tmp, 'tmp-fail');
    await mkdir(tmpDir);
    expect(await failsWith(openOciArchive(file, 'nope', undefined, { tmpDir }), 'NOT_FOUND')).toContain('no image named "nope"');
    expect(await readdir(tmpDir)).toEqual([]);
  });

  it('a directory is not an archive', async () => {
    const err = await openOciArchive(layout.dir).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('USAGE');
    expect((err as Error).message).toBe(`oci-archive ${layout.dir}: is a directory, not an archive file`);
  });
});

describe('openOciArchive: damaged and hostile archives', () => {
  async function layoutFiles(): Promise<Map<string, Buffer>> {
    const files = new Map<string, Buffer>();
    files.set('oci-layout', await readFile(join(layout.dir, 'oci-layout')));
    files.set('index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: layout.refs.base, size: layout.images.base!.manifestSize }] })));
    const base = layout.images.base!;
    for (const d of [base.manifestDigest, base.configDigest, base.layers[0]!.digest]) {
      files.set(`blobs/sha256/${digestHex(d as never)}`, await readFile(join(layout.dir, 'blobs', 'sha256', digestHex(d as never))));
    }
    return files;
  }
  let n = 0;
  async function archive(files: Map<string, Buffer>, extra: Parameters<typeof tarOf>[0] = []): Promise<string> {
    const path = join(tmp, `hostile-${n++}.tar`);
    await writeFile(path, tarOf([...[...files].map(([name, data]) => ({ name, data })), ...extra]));
    return path;
  }

  it('the minimal layout reads (the control for the cases below)', async () => {
    const file = await archive(await layoutFiles());
    expect(await readAllLayers((await openOciArchive(file)).images[0]!)).toEqual([layout.images.base!.layers[0]!.diffId]);
  });

  it('an entry that climbs out is UNSAFE_PATH', async () => {
    const file = await archive(await layoutFiles(), [{ name: 'blobs/../../../tmp/evil', data: 'x' }]);
    expect(await failsWith(openOciArchive(file), 'UNSAFE_PATH')).toBe(`oci-archive ${file}: entry "blobs/../../../tmp/evil" leaves the archive ("..")`);
  });

  it('a blob that is a symlink out of the archive is UNSAFE_PATH', async () => {
    const files = await layoutFiles();
    const layer = `blobs/sha256/${digestHex(layout.images.base!.layers[0]!.digest as never)}`;
    files.delete(layer);
    const file = await archive(files, [{ name: layer, type: 'SymbolicLink', linkpath: '../../../../etc/passwd' }]);
    expect(await failsWith(openOciArchive(file), 'UNSAFE_PATH')).toContain(`entry "${layer}" is a symlink that leaves the archive`);
  });

  it('a missing layer blob is NOT_FOUND naming it', async () => {
    const files = await layoutFiles();
    const layer = layout.images.base!.layers[0]!;
    files.delete(`blobs/sha256/${digestHex(layer.digest as never)}`);
    const file = await archive(files);
    expect(await failsWith(openOciArchive(file), 'NOT_FOUND')).toBe(
      `oci-archive ${file} image ${layout.refs.base}: layer 0 blob ${layer.digest} is missing (blobs/sha256/${digestHex(layer.digest as never)})`,
    );
  });

  it('a swapped config is a DIGEST_MISMATCH', async () => {
    const files = await layoutFiles();
    const name = `blobs/sha256/${digestHex(layout.images.base!.configDigest as never)}`;
    const config = files.get(name)!;
    files.set(name, Buffer.from(config.toString().replace('"os":"linux"', '"os":"linuX"')));
    const file = await archive(files);
    expect(await failsWith(openOciArchive(file), 'DIGEST_MISMATCH')).toContain(`config: blob ${layout.images.base!.configDigest}: digest mismatch`);
  });

  it('a tampered layer blob fails its stream', async () => {
    const files = await layoutFiles();
    const name = `blobs/sha256/${digestHex(layout.images.base!.layers[0]!.digest as never)}`;
    const bytes = Buffer.from(files.get(name)!);
    bytes[5000] = bytes[5000]! ^ 0x10;
    files.set(name, bytes);
    const image = (await openOciArchive(await archive(files))).images[0]!;
    const err = await collect(await image.layers[0]!.blob()).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('DIGEST_MISMATCH');
  });

  it('index.json that is not JSON; a missing oci-layout', async () => {
    const files = await layoutFiles();
    files.set('index.json', Buffer.from('nope'));
    const file = await archive(files);
    expect(await failsWith(openOciArchive(file), 'INVALID_MANIFEST')).toBe(`oci-archive ${file} index.json: not valid JSON`);
    files.delete('oci-layout');
    const file2 = await archive(files);
    expect(await failsWith(openOciArchive(file2), 'INVALID_MANIFEST')).toBe(`oci-archive ${file2}: not an OCI image layout (no oci-layout file)`);
  });

  it('an oversized index.json is refused before it is read', async () => {
    const files = await layoutFiles();
    files.set('index.json', Buffer.alloc(5 * 1024 * 1024, 0x20));
    expect(await failsWith(openOciArchive(await archive(files)), 'INVALID_MANIFEST')).toMatch(/index.json is 5242880 bytes, over the/);
  });

  it('a manifest reached by digest is verified like any other', async () => {
    const files = await layoutFiles();
    const file = await archive(files);
    const other = digestOf('other');
    expect(await failsWith(openOciArchive(file, other), 'NOT_FOUND')).toContain(`no image with digest ${other}`);
  });
});
