import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listDockerArchive, openDockerArchive } from '../../src/archive/docker-archive.js';
import { openOciArchive } from '../../src/archive/oci-archive.js';
import { openOciLayout } from '../../src/archive/oci-layout.js';
import { digestHex, digestOf } from '../../src/oci/digest.js';
import { parseManifest } from '../../src/oci/manifest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { formatReference } from '../../src/oci/reference.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { collect, failsWith, readAllLayers, run, sh, tarOf, type RawEntry } from './fixtures.js';

let tmp: string;
let layout: TestLayout;
let appTar: string;
let multiTar: string;
/** The files of app's docker-archive, as skopeo wrote them. */
let appFiles: { manifest: Array<{ Config: string; RepoTags: string[]; Layers: string[] }>; config: Buffer; layers: Buffer[] };

beforeAll(async () => {
  tmp = await makeTempDir('docker-archive');
  layout = await buildTestLayout(join(tmp, 'layout'));
  appTar = join(tmp, 'app.tar');
  await sh(`skopeo copy -q oci:${layout.dir}:app docker-archive:${appTar}:app:1`);
  await sh(`skopeo copy -q oci:${layout.dir}:tools docker-archive:${tmp}/tools.tar:registry.example:5000/team/tools:2`);
  // skopeo writes one image per docker-archive: merge two the way `docker save a b` lays them out.
  await mkdir(join(tmp, 'multi'));
  await sh(`tar -xf ${appTar} && tar -xf ../tools.tar manifest.json --to-stdout > tools-manifest.json && tar -xf ../tools.tar --exclude=manifest.json --exclude=repositories`, join(tmp, 'multi'));
  const a = JSON.parse(await readFile(join(tmp, 'multi', 'manifest.json'), 'utf8')) as unknown[];
  const b = JSON.parse(await readFile(join(tmp, 'multi', 'tools-manifest.json'), 'utf8')) as unknown[];
  await writeFile(join(tmp, 'multi', 'manifest.json'), JSON.stringify([...a, ...b]));
  multiTar = join(tmp, 'multi.tar');
  await sh(`tar --exclude=tools-manifest.json -cf ${multiTar} -C ${tmp}/multi .`);

  const manifest = JSON.parse(await sh(`tar -xOf ${appTar} manifest.json`)) as typeof appFiles.manifest;
  const read = async (name: string): Promise<Buffer> => (await run('tar', ['-xOf', appTar, name], { encoding: 'buffer', maxBuffer: 64 << 20 })).stdout;
  appFiles = {
    manifest,
    config: await read(manifest[0]!.Config),
    layers: await Promise.all(manifest[0]!.Layers.map((l) => read(l))),
  };
});
afterAll(async () => {
  await removeDir(tmp);
});

let files = 0;
async function archiveOf(entries: RawEntry[]): Promise<string> {
  const path = join(tmp, `built-${files++}.tar`);
  await writeFile(path, tarOf(entries));
  return path;
}

/** app's docker-archive rebuilt from its files, with the given changes. */
function appEntries(change: { manifest?: unknown; layers?: (Buffer | undefined)[]; layerNames?: string[]; config?: Buffer } = {}): RawEntry[] {
  const m = appFiles.manifest[0]!;
  const layerNames = change.layerNames ?? m.Layers;
  const entries: RawEntry[] = [
    { name: 'manifest.json', data: JSON.stringify(change.manifest ?? [{ ...m, Layers: layerNames }]) },
    { name: m.Config, data: change.config ?? appFiles.config },
  ];
  (change.layers ?? appFiles.layers).forEach((data, i) => {
    if (data !== undefined) entries.push({ name: layerNames[i] ?? `extra-${i}`, data });
  });
  return entries;
}

describe('openDockerArchive', () => {
  it('reads skopeo docker-archive output: synthesised schema 2 manifest, plain-tar layers named by diffId', async () => {
    const opened = await openDockerArchive(appTar);
    const app = layout.images.app!;
    expect(opened.images).toHaveLength(1);
    const image = opened.images[0]!;
    expect(image.ref && formatReference(image.ref)).toBe('docker.io/library/app:1');
    expect(image.configDigest).toBe(app.configDigest);
    expect(digestOf(image.rawConfig)).toBe(app.configDigest);
    expect(image.mediaType).toBe(MediaType.dockerManifest);
    expect(image.digest).toBe(digestOf(image.rawManifest));
    // The raw bytes parse back to exactly the manifest the image carries.
    const parsed = parseManifest(image.rawManifest, MediaType.dockerManifest, 'synth');
    expect(parsed.manifest).toEqual(image.manifest);
    expect(image.manifest.config).toEqual({ mediaType: MediaType.dockerConfig, digest: app.configDigest, size: image.rawConfig.length });
    for (const [i, layer] of image.layers.entries()) {
      expect(layer.stored).toBe('tar');
      expect(layer.descriptor.mediaType).toBe(MediaType.dockerLayer);
      expect(layer.descriptor.digest).toBe(app.layers[i]!.diffId);
      expect(layer.tarSize).toBe(layer.descriptor.size);
    }
    expect(await readAllLayers(image)).toEqual(app.layers.map((l) => l.diffId));
    expect(image.platform).toEqual({ os: 'linux', architecture: image.config.architecture });
    await opened.close();
  });

  it('the same image reads the same from the OCI layout, the OCI archive and the docker-archive', async () => {
    const ociArchive = join(tmp, 'same-oci.tar');
    await sh(`skopeo copy -q oci:${layout.dir}:app oci-archive:${ociArchive}:app:1`);
    const fromLayout = (await openOciLayout(layout.dir, 'app')).images[0]!;
    const oci = await openOciArchive(ociArchive, 'app:1');
    const docker = await openDockerArchive(appTar, 'app:1');
    const images = [fromLayout, oci.images[0]!, docker.images[0]!];
    const diffIds = await Promise.all(images.map((i) => readAllLayers(i)));
    expect(diffIds[1]).toEqual(diffIds[0]);
    expect(diffIds[2]).toEqual(diffIds[0]);
    expect(new Set(images.map((i) => i.configDigest)).size).toBe(1);
    // The OCI forms keep the registry manifest; the docker-archive can only synthesise one.
    expect(oci.images[0]!.digest).toBe(fromLayout.digest);
    expect(docker.images[0]!.digest).not.toBe(fromLayout.digest);
    await oci.close();
    await docker.close();
  });

  it('selects by tag (docker-normalised), @N, or image ID; lists all', async () => {
    const tools = layout.images.tools!;
    for (const sel of ['registry.example:5000/team/tools:2', '@1', tools.configDigest]) {
      const r = await openDockerArchive(multiTar, sel);
      expect(r.images[0]!.configDigest).toBe(tools.configDigest);
      expect(formatReference(r.images[0]!.ref!)).toBe('registry.example:5000/team/tools:2');
    }
    for (const sel of ['app:1', 'docker.io/library/app:1', 'library/app:1', '@0']) {
      expect((await openDockerArchive(multiTar, sel)).images[0]!.configDigest).toBe(layout.images.app!.configDigest);
    }
    const list = await listDockerArchive(multiTar);
    expect(list.entries.map((e) => [e.index, e.repoTags])).toEqual([
      [0, ['docker.io/library/app:1']],
      [1, ['registry.example:5000/team/tools:2']],
    ]);
    const [a, t] = await Promise.all(list.entries.map((e) => readAllLayers(e.image)));
    expect(a).toEqual(layout.images.app!.layers.map((l) => l.diffId));
    expect(t).toEqual(tools.layers.map((l) => l.diffId));
    expect(a![0]).toBe(t![0]); // the shared base layer
    await list.close();
  });

  it('several images need a selector; errors list them', async () => {
    const list = '@0 docker.io/library/app:1, @1 registry.example:5000/team/tools:2';
    expect(await failsWith(openDockerArchive(multiTar), 'USAGE')).toBe(`docker-archive ${multiTar}: holds 2 images; say which one: ${list}`);
    expect(await failsWith(openDockerArchive(multiTar, 'app:2'), 'NOT_FOUND')).toBe(`docker-archive ${multiTar}: no image named "app:2"; it holds ${list}`);
    expect(await failsWith(openDockerArchive(multiTar, '@2'), 'NOT_FOUND')).toContain('no image @2');
    expect(await failsWith(openDockerArchive(multiTar, digestOf('x')), 'NOT_FOUND')).toContain('no image with ID sha256:');
    expect(await failsWith(openDockerArchive(multiTar, 'NOT A REF'), 'NOT_FOUND')).toContain('no image named "NOT A REF"');
  });

  it('an archive of many images lists ten of them in a message, and how many more', async () => {
    const m = appFiles.manifest[0]!;
    const many = await archiveOf(appEntries({ manifest: Array.from({ length: 12 }, (_, i) => ({ ...m, RepoTags: [`app:${i}`] })) }));
    const list = Array.from({ length: 10 }, (_, i) => `@${i} app:${i}`).join(', ');
    expect(await failsWith(openDockerArchive(many), 'USAGE')).toBe(`docker-archive ${many}: holds 12 images; say which one: ${list} and 2 more (its manifest.json lists them all)`);
    expect(formatReference((await openDockerArchive(many, 'app:11')).images[0]!.ref!)).toBe('docker.io/library/app:11');
  });

  it.each([
    ['gzip', 'gzip -c'],
    ['zstd', 'zstd -q -c'],
  ])('reads a %s-compressed archive via a temp copy that close() removes', async (kind, cmd) => {
    const file = join(tmp, `app.tar.${kind}`);
    await sh(`${cmd} ${appTar} > ${file}`);
    const tmpDir = join(tmp, `tmp-${kind}`);
    await mkdir(tmpDir);
    const opened = await openDockerArchive(file, undefined, { tmpDir });
    expect(await readdir(tmpDir)).toHaveLength(1);
    expect(await readAllLayers(opened.images[0]!)).toEqual(layout.images.app!.layers.map((l) => l.diffId));
    await opened.close();
    expect(await readdir(tmpDir)).toEqual([]);
  });

  it('reads the docker 25+ form (an OCI layout inside, manifest.json pointing at blobs/sha256)', async () => {
    const app = layout.images.app!;
    const configName = `blobs/sha256/${digestHex(app.configDigest as never)}`;
    const layerNames = app.layers.map((l) => `blobs/sha256/${digestHex(l.diffId as never)}`);
    const file = await archiveOf([
      { name: 'blobs/', type: 'Directory' },
      { name: 'blobs/sha256/', type: 'Directory' },
      { name: configName, data: appFiles.config },
      ...layerNames.map((name, i) => ({ name, data: appFiles.layers[i]! })),
      { name: 'index.json', data: '{"schemaVersion":2,"manifests":[]}' },
      { name: 'manifest.json', data: JSON.stringify([{ Config: configName, RepoTags: ['app:25'], Layers: layerNames }]) },
      { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    ]);
    const image = (await openDockerArchive(file, 'app:25')).images[0]!;
    expect(image.layers.map((l) => l.descriptor.mediaType)).toEqual([MediaType.dockerLayer, MediaType.dockerLayer]);
    expect(await readAllLayers(image)).toEqual(app.layers.map((l) => l.diffId));
  });

  it('keeps gzip layers as gzip blobs (digest from the blob name, or hashed when unnamed)', async () => {
    const app = layout.images.app!;
    const gz = await Promise.all(app.layers.map((l) => readFile(join(layout.dir, 'blobs', 'sha256', digestHex(l.digest as never)))));
    const names = [`blobs/sha256/${digestHex(app.layers[0]!.digest as never)}`, 'abc/layer.tar'];
    const file = await archiveOf(appEntries({ layers: gz, layerNames: names }));
    const image = (await openDockerArchive(file)).images[0]!;
    expect(image.layers.map((l) => l.stored)).toEqual(['blob', 'blob']);
    expect(image.layers.map((l) => l.descriptor)).toEqual(
      app.layers.map((l) => ({ mediaType: MediaType.dockerLayerGzip, digest: l.digest, size: l.size })),
    );
    expect(await readAllLayers(image)).toEqual(app.layers.map((l) => l.diffId));
  });

  it('follows the legacy <id>/layer.tar symlinks docker save writes', async () => {
    const m = appFiles.manifest[0]!;
    const file = await archiveOf([
      { name: 'manifest.json', data: JSON.stringify([{ ...m, Layers: ['aaa/layer.tar', 'bbb/layer.tar'] }]) },
      { name: m.Config, data: appFiles.config },
      { name: 'aaa/', type: 'Directory' },
      { name: 'aaa/layer.tar', data: appFiles.layers[0]! },
      { name: 'bbb/', type: 'Directory' },
      { name: 'bbb/layer.tar', type: 'SymbolicLink', linkpath: '../ccc/layer.tar' },
      { name: 'ccc/layer.tar', data: appFiles.layers[1]! },
    ]);
    expect(await readAllLayers((await openDockerArchive(file)).images[0]!)).toEqual(layout.images.app!.layers.map((l) => l.diffId));
  });
});

describe('openDockerArchive: damaged and hostile archives', () => {
  it('manifest.json that is not JSON', async () => {
    const file = await archiveOf([{ name: 'manifest.json', data: '[{"Config":' }]);
    const msg = await failsWith(openDockerArchive(file), 'INVALID_MANIFEST');
    expect(msg).toBe(`docker-archive ${file}: manifest.json is not valid JSON`);
  });

  it.each<[string, unknown, string]>([
    ['an object', { Config: 'x' }, 'manifest.json is not a non-empty list of images'],
    ['an empty list', [], 'manifest.json is not a non-empty list of images'],
    ['no Config', [{ Layers: [] }], 'manifest.json[0]: Config is missing'],
    ['Layers not names', [{ Config: 'c', Layers: [1] }], 'manifest.json[0]: Layers is not a list of file names'],
    ['RepoTags not names', [{ Config: 'c', Layers: [], RepoTags: 'app' }], 'manifest.json[0]: RepoTags is not a list of names'],
  ])('manifest.json with %s', async (_n, manifest, why) => {
    const file = await archiveOf([{ name: 'manifest.json', data: JSON.stringify(manifest) }]);
    expect(await failsWith(openDockerArchive(file), 'INVALID_MANIFEST')).toBe(`docker-archive ${file}: ${why}`);
  });

  it('no manifest.json; an OCI archive given by mistake gets a hint', async () => {
    const oci = join(tmp, 'mistake-oci.tar');
    await sh(`skopeo copy -q oci:${layout.dir}:base oci-archive:${oci}`);
    const err = await openDockerArchive(oci).catch((e: unknown) => e);
    expect((err as Error).message).toBe(`docker-archive ${oci}: not a docker-archive (no manifest.json)`);
    expect((err as { hint?: string }).hint).toMatch(/oci-archive/);
  });

  it('a layer path that climbs out of the archive is UNSAFE_PATH', async () => {
    const names = ['../../../../etc/passwd', appFiles.manifest[0]!.Layers[1]!];
    const file = await archiveOf(appEntries({ layerNames: names, layers: [undefined, appFiles.layers[1]] }));
    const msg = await failsWith(openDockerArchive(file), 'UNSAFE_PATH');
    expect(msg).toBe(`docker-archive ${file} manifest.json[0].Layers[0]: entry "../../../../etc/passwd" leaves the archive ("..")`);
    // And a tar that holds such an entry is refused whole.
    const withEntry = await archiveOf(appEntries({ layerNames: names }));
    expect(await failsWith(openDockerArchive(withEntry), 'UNSAFE_PATH')).toBe(
      `docker-archive ${withEntry}: entry "../../../../etc/passwd" leaves the archive ("..")`,
    );
  });

  it('an absolute Config path is UNSAFE_PATH', async () => {
    const m = appFiles.manifest[0]!;
    const file = await archiveOf(appEntries({ manifest: [{ ...m, Config: '/etc/passwd' }] }));
    expect(await failsWith(openDockerArchive(file), 'UNSAFE_PATH')).toContain('Config: entry "/etc/passwd" is an absolute path');
  });

  it('a layer.tar symlink out of the archive is UNSAFE_PATH', async () => {
    const m = appFiles.manifest[0]!;
    const file = await archiveOf([
      { name: 'manifest.json', data: JSON.stringify([{ ...m, Layers: ['aaa/layer.tar', m.Layers[1]] }]) },
      { name: 'aaa/layer.tar', type: 'SymbolicLink', linkpath: '../../etc/shadow' },
    ]);
    expect(await failsWith(openDockerArchive(file), 'UNSAFE_PATH')).toContain('entry "aaa/layer.tar" is a symlink that leaves the archive');
  });

  it('a missing layer file is NOT_FOUND naming the entry', async () => {
    const m = appFiles.manifest[0]!;
    const file = await archiveOf(appEntries({ layers: [appFiles.layers[0], undefined] }));
    const msg = await failsWith(openDockerArchive(file), 'NOT_FOUND');
    expect(msg).toBe(`docker-archive ${file}: manifest.json[0].Layers[1] "${m.Layers[1]}" is missing from the archive`);
  });

  it('a missing config is NOT_FOUND', async () => {
    const file = await archiveOf([{ name: 'manifest.json', data: JSON.stringify(appFiles.manifest) }]);
    expect(await failsWith(openDockerArchive(file), 'NOT_FOUND')).toContain(`manifest.json[0].Config "${appFiles.manifest[0]!.Config}" is missing`);
  });

  it('a config that does not hash to its name is a DIGEST_MISMATCH', async () => {
    const config = Buffer.from(appFiles.config.toString().replace('"os":"linux"', '"os":"linux" '));
    const file = await archiveOf(appEntries({ config }));
    expect(await failsWith(openDockerArchive(file), 'DIGEST_MISMATCH')).toContain(`manifest.json[0].Config "${appFiles.manifest[0]!.Config}": digest mismatch`);
  });

  it('layers shuffled against the config diff_ids: found at open when content-addressed, else while streaming', async () => {
    const [a, b] = appFiles.manifest[0]!.Layers as [string, string];
    const byDigest = [`blobs/sha256/${b.replace('.tar', '')}`, `blobs/sha256/${a.replace('.tar', '')}`];
    const file = await archiveOf(appEntries({ layerNames: byDigest, layers: [appFiles.layers[1]!, appFiles.layers[0]!] }));
    expect(await failsWith(openDockerArchive(file), 'DIGEST_MISMATCH')).toContain(`manifest.json[0].Layers[0] "${byDigest[0]}" is named`);
    const legacy = await archiveOf(appEntries({ layerNames: [b, a], layers: [appFiles.layers[1]!, appFiles.layers[0]!] }));
    const image = (await openDockerArchive(legacy)).images[0]!;
    const err = await collect(await image.layers[0]!.tar()).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('DIGEST_MISMATCH');
  });

  it('a tampered layer fails its stream with DIGEST_MISMATCH naming image and layer', async () => {
    const bad = Buffer.from(appFiles.layers[1]!);
    bad[700] = bad[700]! ^ 0x01;
    const file = await archiveOf(appEntries({ layers: [appFiles.layers[0]!, bad], layerNames: ['l0/layer.tar', 'l1/layer.tar'] }));
    const image = (await openDockerArchive(file)).images[0]!;
    const err = await collect(await image.layers[1]!.tar()).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('DIGEST_MISMATCH');
    expect((err as Error).message).toContain(`docker-archive ${file} image docker.io/library/app:1 layer 1 "l1/layer.tar"`);
  });

  it('a corrupted gzip layer fails its stream, not the process', async () => {
    const app = layout.images.app!;
    const gz = await readFile(join(layout.dir, 'blobs', 'sha256', digestHex(app.layers[1]!.digest as never)));
    expect(gunzipSync(gz).length).toBeGreaterThan(0);
    const bad = Buffer.from(gz);
    bad[20] = bad[20]! ^ 0xff;
    const file = await archiveOf(appEntries({ layers: [appFiles.layers[0]!, bad], layerNames: ['l0/layer.tar', 'l1/layer.tar'] }));
    const image = (await openDockerArchive(file)).images[0]!;
    await expect(collect(await image.layers[1]!.tar())).rejects.toThrow();
  });

  it('more layers than diff_ids is refused', async () => {
    const m = appFiles.manifest[0]!;
    const file = await archiveOf(appEntries({ layerNames: [...m.Layers, m.Layers[0]!] }));
    expect(await failsWith(openDockerArchive(file), 'INVALID_MANIFEST')).toContain('manifest.json lists 3 layers, the config has 2 diff_ids');
  });

  it('a truncated archive is refused, naming the file', async () => {
    const bytes = await readFile(appTar);
    const file = join(tmp, 'cut.tar');
    await writeFile(file, bytes.subarray(0, 100_000));
    expect(await failsWith(openDockerArchive(file), 'INVALID_MANIFEST')).toMatch(new RegExp(`^docker-archive ${file}: truncated tar`));
  });

  it('xz archives are UNSUPPORTED with a hint; a damaged gzip one fails cleanly and leaves no temp files', async () => {
    const xz = join(tmp, 'app.tar.xz');
    await writeFile(xz, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3]));
    expect(await failsWith(openDockerArchive(xz), 'UNSUPPORTED')).toBe(`docker-archive ${xz}: xz-compressed archives are not supported`);
    const gz = join(tmp, 'bad.tar.gz');
    await sh(`gzip -c ${appTar} | head -c 50000 > ${gz}`);
    const tmpDir = join(tmp, 'tmp-bad');
    await mkdir(tmpDir);
    expect(await failsWith(openDockerArchive(gz, undefined, { tmpDir }), 'INVALID_MANIFEST')).toContain(`docker-archive ${gz}: cannot decompress (gzip)`);
    expect(await readdir(tmpDir)).toEqual([]);
  });

  it('a file that does not exist', async () => {
    expect(await failsWith(openDockerArchive(join(tmp, 'none.tar')), 'NOT_FOUND')).toContain(`docker-archive ${tmp}/none.tar: cannot open`);
  });
});

describe('openDockerArchive: after close', () => {
  it('a layer of a closed compressed archive fails with IO_ERROR naming the archive and entry', async () => {
    const file = join(tmp, 'closed.tar.gz');
    await sh(`gzip -c ${appTar} > ${file}`);
    const opened = await openDockerArchive(file);
    await opened.close();
    const err = await collect(await opened.images[0]!.layers[0]!.tar()).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('IO_ERROR');
    expect((err as Error).message).toContain(`docker-archive ${file}: read entry "${appFiles.manifest[0]!.Layers[0]}": ENOENT`);
  });

  it('an aborted read stops the stream', async () => {
    const opened = await openDockerArchive(appTar);
    const ac = new AbortController();
    const stream = await opened.images[0]!.layers[0]!.tar({ signal: ac.signal });
    ac.abort();
    await expect(collect(stream)).rejects.toThrow(/abort/i);
  });
});
