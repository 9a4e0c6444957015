import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import type { Image, Layer } from '../../src/oci/image.js';
import { parseImageConfig, parseManifest, type ImageManifest } from '../../src/oci/manifest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { excludeSetFromInventory, loadExcludeSet } from '../../src/bundle/delta.js';
import { headerPieces, parseHeader, serializeHeader, type BundleTool } from '../../src/bundle/format.js';
import { planBundle, type PlanOptions } from '../../src/bundle/plan.js';
import { FAT32_MAX_FILE, parseSize } from '../../src/bundle/size.js';
import { BLOCK, checksumMatches, decodeHeader, padding, parsePaxRecords, TAR_END } from '../../src/io/tar-format.js';
import { BundleTarReader } from '../../src/bundle/tar-reader.js';
import { carryFile } from '../../src/bundle/tools.js';
import { bundleEntryHeader, bundleTime } from '../../src/bundle/write-bundle.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { drain, run } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('bundle-units');
});
afterAll(async () => {
  await removeDir(dir);
});

describe('tar headers', () => {
  it('GNU tar reads what ferry writes, long names through a PAX header', async () => {
    const long = `blobs/${'d'.repeat(120)}/file`;
    const body = Buffer.from('hello\n');
    const tar = Buffer.concat([
      bundleEntryHeader('dir/', 'directory', 0, 1704067200),
      bundleEntryHeader('dir/short', 'file', body.length, 1704067200),
      body,
      padding(body.length),
      bundleEntryHeader(long, 'file', body.length, 1704067200),
      body,
      padding(body.length),
      TAR_END,
    ]);
    await writeFile(join(dir, 't.tar'), tar);
    const { stdout } = await run('tar', ['-tvf', join(dir, 't.tar'), '--utc']);
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^drwxr-xr-x 0\/0\s+0 2024-01-01 00:00 dir\/$/);
    expect(lines[1]).toMatch(/^-rw-r--r-- 0\/0\s+6 2024-01-01 00:00 dir\/short$/);
    expect(lines[2]).toContain(long);

    // And ferry's own reader, chunk boundaries anywhere.
    const chunks: Buffer[] = [];
    for (let i = 0; i < tar.length; i += 77) chunks.push(tar.subarray(i, i + 77));
    const reader = new BundleTarReader(Readable.from(chunks), 'test tar');
    const seen: string[] = [];
    for (let e = await reader.nextEntry(); e !== undefined; e = await reader.nextEntry()) {
      seen.push(`${e.type} ${e.name}`);
      if (e.name === long) expect((await drain(reader.bodyChunks())).toString()).toBe('hello\n');
    }
    expect(seen).toEqual(['directory dir/', 'file dir/short', `file ${long}`]);
  });

  it('sizes over 8 GiB go in a PAX size record', () => {
    const size = 9 * 1024 ** 3 + 5;
    const header = bundleEntryHeader('big', 'file', size, 0);
    expect(header.length).toBe(3 * BLOCK);
    const pax = decodeHeader(header.subarray(0, BLOCK));
    expect(pax.typeflag).toBe('x');
    expect(parsePaxRecords(header.subarray(BLOCK, BLOCK + pax.size)).get('size')?.toString()).toBe(String(size));
    expect(decodeHeader(header.subarray(2 * BLOCK))).toMatchObject({ name: Buffer.from('big'), typeflag: '0' });
  });

  it('a header with a bad checksum is refused (not a tar)', async () => {
    const block = bundleEntryHeader('x', 'file', 0, 0);
    block[0] = 0x79;
    expect(checksumMatches(block)).toBe(false);
    const reader = new BundleTarReader(Readable.from([block, TAR_END]), 'test tar');
    await expect(reader.nextEntry()).rejects.toThrow(/bad tar header at byte 0/);
  });

  it('symlinks, devices and hardlinks are refused: a bundle holds only files and directories', async () => {
    const block = bundleEntryHeader('blobs/sha256/evil', 'file', 0, 0);
    block.write('2', 156, 'ascii'); // symlink
    block.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of block) sum += b;
    block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
    const reader = new BundleTarReader(Readable.from([block, TAR_END]), 'test tar');
    await expect(reader.nextEntry()).rejects.toThrow(/tar type "2"; a bundle holds only files and directories/);
  });

  it('a stream that ends inside an entry is a truncated bundle', async () => {
    const body = Buffer.alloc(2000, 1);
    const tar = Buffer.concat([bundleEntryHeader('f', 'file', body.length, 0), body.subarray(0, 700)]);
    const reader = new BundleTarReader(Readable.from([tar]), 'test tar');
    await reader.nextEntry();
    await expect(drain(reader.bodyChunks())).rejects.toThrow(/ends early/);
  });
});

describe('sizes', () => {
  it('parses split sizes', () => {
    expect(parseSize('16M')).toBe(16 * 1024 ** 2);
    expect(parseSize('700M')).toBe(700 * 1024 ** 2);
    expect(parseSize('4G')).toBe(4 * 1024 ** 3);
    expect(parseSize('4GiB')).toBe(4 * 1024 ** 3);
    expect(parseSize('4GB')).toBe(4 * 1000 ** 3);
    expect(parseSize('1.5G')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('123456')).toBe(123456);
    expect(parseSize('fat32')).toBe(FAT32_MAX_FILE);
    expect(FAT32_MAX_FILE).toBe(4294967295);
    for (const bad of ['', 'G', '4X', '-1M', '0']) expect(() => parseSize(bad)).toThrow(/invalid size/);
  });
});

// A small Image built in the test from real tar bytes: enough for the pure planner.
function fakeImage(layerTars: Buffer[], options: { docker?: boolean; created?: string } = {}): Image {
  const diffIds = layerTars.map((t) => digestOf(t));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', created: options.created, rootfs: { type: 'layers', diff_ids: diffIds } }));
  const layerType = options.docker === true ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip;
  // Stand-in "compressed" blobs: distinct bytes, so digests differ from diffIds.
  const blobs = layerTars.map((t) => Buffer.concat([Buffer.from('gz'), t]));
  const manifestDoc = {
    schemaVersion: 2,
    mediaType: options.docker === true ? MediaType.dockerManifest : MediaType.ociManifest,
    config: { mediaType: options.docker === true ? MediaType.dockerConfig : MediaType.ociConfig, digest: digestOf(config), size: config.length },
    layers: blobs.map((b) => ({ mediaType: layerType, digest: digestOf(b), size: b.length, annotations: { keep: 'me' } })),
  };
  const rawManifest = Buffer.from(JSON.stringify(manifestDoc));
  const parsed = parseManifest(rawManifest, undefined, 'fake');
  const layers: Layer[] = layerTars.map((t, i) => ({
    descriptor: (parsed.manifest as ImageManifest).layers[i]!,
    diffId: diffIds[i]!,
    stored: 'tar',
    tarSize: t.length,
    blob: async () => Readable.from([blobs[i]!]),
    tar: async () => Readable.from([t]),
  }));
  return {
    ref: undefined,
    digest: digestOf(rawManifest),
    mediaType: parsed.mediaType,
    rawManifest,
    manifest: parsed.manifest as ImageManifest,
    configDigest: digestOf(config),
    rawConfig: config,
    config: parseImageConfig(config, 'fake config'),
    platform: { os: 'linux', architecture: 'amd64' },
    layers,
  };
}

const tarA = Buffer.alloc(1024, 'a');
const tarB = Buffer.alloc(2048, 'b');
const tarC = Buffer.alloc(1536, 'c');
const tarD = Buffer.alloc(512, 'd');

function options(layers: Image[], extra: Partial<PlanOptions> = {}): PlanOptions {
  const tarSizes = new Map<Digest, number>();
  for (const img of layers) for (const l of img.layers) tarSizes.set(l.diffId, l.tarSize!);
  return { layers: 'raw', level: 9, windowLog: 27, exclude: new Set(), created: new Date(0), ferryVersion: 'test', tarSizes, ...extra };
}

describe('planBundle (pure)', () => {
  const one = fakeImage([tarA, tarB]);
  const two = fakeImage([tarA, tarC, tarD]);

  it('orders layers by depth, each blob once, manifests and configs first', () => {
    const plan = planBundle([{ ref: 'x/two:1', image: two }, { ref: 'x/one:1', image: one }], options([one, two]));
    const kinds = plan.header.blobs.map((b) => `${b.kind}:${b.encoding}`);
    expect(kinds).toEqual([
      'manifest:as-pulled', 'manifest:rewritten', 'config:as-pulled',
      'manifest:as-pulled', 'manifest:rewritten', 'config:as-pulled',
      'layer:raw', 'layer:raw', 'layer:raw', 'layer:raw',
    ]);
    const layers = plan.header.blobs.filter((b) => b.kind === 'layer').map((b) => b.digest);
    expect(layers).toEqual([digestOf(tarA), digestOf(tarB), digestOf(tarC), digestOf(tarD)]);
    expect(plan.header.images.map((i) => i.ref)).toEqual(['x/one:1', 'x/two:1']);
    // Same inputs, same bytes.
    expect(planBundle([{ ref: 'x/one:1', image: one }, { ref: 'x/two:1', image: two }], options([one, two])).headerBytes.equals(plan.headerBytes)).toBe(true);
  });

  it('rewrites manifests to raw layers of the same family, keeping everything else', () => {
    const docker = fakeImage([tarA], { docker: true });
    const plan = planBundle([{ ref: 'x/d:1', image: docker }], options([docker]));
    const rewritten = plan.entries.find((e) => e.type === 'file' && e.digest === plan.header.images[0]!.layoutManifestDigest)!;
    const bytes = rewritten.type === 'file' && rewritten.content.kind === 'bytes' ? rewritten.content.bytes : Buffer.alloc(0);
    const doc = JSON.parse(bytes.toString()) as { mediaType: string; config: unknown; layers: Array<Record<string, unknown>> };
    expect(doc.mediaType).toBe(MediaType.dockerManifest);
    expect(doc.config).toEqual(docker.manifest.config);
    expect(doc.layers).toEqual([{ mediaType: MediaType.dockerLayer, digest: digestOf(tarA), size: tarA.length, annotations: { keep: 'me' } }]);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(plan.header.images[0]!.layoutManifestDigest.slice(7));
  });

  it('makes a rewritten manifest again when it is written, and refuses one that no longer matches the plan', () => {
    const image = fakeImage([tarA]);
    const plan = planBundle([{ ref: 'x/m:1', image }], options([image]));
    const rewritten = plan.entries.find((e) => e.type === 'file' && e.digest === plan.header.images[0]!.layoutManifestDigest)!;
    const bytesOf = (): Buffer => (rewritten.type === 'file' && rewritten.content.kind === 'bytes' ? rewritten.content.bytes : Buffer.alloc(0));
    expect(digestOf(bytesOf())).toBe(plan.header.images[0]!.layoutManifestDigest);
    // The source's manifest changed after planning (same layers, another annotation).
    const doc = JSON.parse(image.rawManifest.toString()) as { annotations?: Record<string, string> };
    (image as { rawManifest: Buffer }).rawManifest = Buffer.from(JSON.stringify({ ...doc, annotations: { changed: 'yes' } }));
    const err = (() => {
      try {
        return bytesOf();
      } catch (e) {
        return e;
      }
    })();
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect((err as Error).message).toMatch(/the manifest of x\/m:1 was rewritten as sha256:\S+, planned as sha256:/);
  });

  it('as-pulled keeps blobs and points the layout at the original manifests', () => {
    const plan = planBundle([{ ref: 'x/one:1', image: one }], options([one], { layers: 'as-pulled' }));
    expect(plan.header.images[0]!.layoutManifestDigest).toBe(one.digest);
    expect(plan.header.blobs.filter((b) => b.kind === 'layer').map((b) => b.digest)).toEqual(one.layers.map((l) => l.descriptor.digest));
    expect(plan.header.blobs.some((b) => b.encoding === 'rewritten')).toBe(false);
  });

  it('a delta leaves out excluded layers (raw: matched by diffId or original digest) and requires them', () => {
    const byDigest = planBundle([{ ref: 'x/two:1', image: two }], options([two], { exclude: new Set([two.layers[0]!.descriptor.digest]) }));
    const byDiffId = planBundle([{ ref: 'x/two:1', image: two }], options([two], { exclude: new Set([two.layers[0]!.diffId]) }));
    for (const plan of [byDigest, byDiffId]) {
      expect(plan.header.blobs.map((b) => b.digest)).not.toContain(two.layers[0]!.diffId);
      expect(plan.header.requires).toEqual([{ digest: two.layers[0]!.descriptor.digest, diffId: two.layers[0]!.diffId, size: two.layers[0]!.descriptor.size, mediaType: MediaType.ociLayerGzip }]);
    }
    // as-pulled matches only the blob digest: a diffId does not give the target the compressed blob.
    const pulled = planBundle([{ ref: 'x/two:1', image: two }], options([two], { layers: 'as-pulled', exclude: new Set([two.layers[0]!.diffId]) }));
    expect(pulled.header.requires).toEqual([]);
  });

  it('refuses the same name and platform with two different manifests', () => {
    expect(() => planBundle([{ ref: 'x/a:1', image: one }, { ref: 'x/a:1', image: two }], options([one, two]))).toThrow(/given twice/);
  });

  it('the header round-trips through parseHeader, which refuses other versions', () => {
    const plan = planBundle([{ ref: 'x/one:1', image: one }], options([one]));
    expect(parseHeader(plan.headerBytes, 'test')).toEqual(plan.header);
    const v2 = serializeHeader({ ...plan.header, formatVersion: 2 as 1 });
    expect(() => parseHeader(v2, 'test')).toThrow(/format version 2 is not supported/);
    expect(() => parseHeader(Buffer.from('{"format":"ferry-bundle","formatVersion":1}'), 'test')).toThrow(/invalid ferry-bundle.json/);
  });

  it('the header in pieces is serializeHeader\'s bytes, each piece but the last at least 64 KiB', () => {
    const header = planBundle([{ ref: 'x/one:1', image: one }, { ref: 'x/two:1', image: two }], options([one, two])).header;
    const tool: BundleTool = { file: 'ferry-linux-x64', size: 3, sha256: 'a'.repeat(64), platform: 'linux-x64' };
    const requirement = { digest: one.layers[0]!.descriptor.digest, diffId: one.layers[0]!.diffId, size: 7, mediaType: MediaType.ociLayerGzip };
    // Hundreds of images (several pieces), names outside ASCII and with JSON escapes.
    const many = Array.from({ length: 600 }, (_, i) => ({ ...header.images[i % 2]!, ref: `x/ünïcöde-${i}:"q"\\t\u2028` }));
    const variants = [header, { ...header, tools: [tool], requires: [requirement] }, { ...header, images: many, blobs: [] }];
    for (const variant of variants) {
      const pieces = [...headerPieces(variant)];
      expect(Buffer.concat(pieces).equals(serializeHeader(variant))).toBe(true);
      pieces.slice(0, -1).forEach((piece) => expect(piece.length).toBeGreaterThanOrEqual(64 * 1024));
    }
    expect([...headerPieces(variants[2]!)].length).toBeGreaterThan(2);
  });

  it('the bundle time comes from SOURCE_DATE_EPOCH, else the newest image', () => {
    const older = fakeImage([tarA], { created: '2023-05-01T10:00:00.123Z' });
    const newer = fakeImage([tarB], { created: '2024-02-03T04:05:06Z' });
    const saved = process.env.SOURCE_DATE_EPOCH;
    try {
      delete process.env.SOURCE_DATE_EPOCH;
      expect(bundleTime([{ ref: 'a', image: older }, { ref: 'b', image: newer }]).toISOString()).toBe('2024-02-03T04:05:06.000Z');
      process.env.SOURCE_DATE_EPOCH = '1700000000';
      expect(bundleTime([{ ref: 'a', image: older }]).getTime()).toBe(1700000000 * 1000);
    } finally {
      if (saved === undefined) delete process.env.SOURCE_DATE_EPOCH;
      else process.env.SOURCE_DATE_EPOCH = saved;
    }
  });
});

describe('exclude sets', () => {
  it('read an inventory of digests or objects', async () => {
    const a = digestOf('a');
    const b = digestOf('b');
    const set = excludeSetFromInventory({ blobs: [a, { digest: b, diffId: digestOf('c'), tarSize: 10 }], diffIds: [digestOf('d')] }, 'inv');
    expect([...set].sort()).toEqual([a, b, digestOf('c'), digestOf('d')].sort());
    expect(set.tarSizes.get(digestOf('c'))).toBe(10);
    // The store's inventory shape (src/store/inventory.ts).
    const store = excludeSetFromInventory(
      {
        kind: 'ferry-inventory',
        schemaVersion: 1,
        blobs: [a],
        diffIds: [digestOf('e')],
        layers: [{ chainId: digestOf('x'), diffId: digestOf('e'), tarSize: 4096, compressedDigests: [digestOf('f')] }],
        images: [{ name: 'docker.io/library/redis:7', manifestDigest: digestOf('m'), platform: { os: 'linux', architecture: 'amd64' } }],
      },
      'inv',
    );
    expect([...store].sort()).toEqual([a, digestOf('e'), digestOf('f')].sort());
    expect(store.tarSizes.get(digestOf('e'))).toBe(4096);
    expect(() => excludeSetFromInventory({ images: [] }, 'inv')).toThrow(/needs a "blobs" list/);
    expect(() => excludeSetFromInventory({ blobs: ['nope'] }, 'inv')).toThrow(/not a digest/);
    await mkdir(join(dir, 'inv'), { recursive: true });
    await writeFile(join(dir, 'inv', 'inventory.json'), JSON.stringify({ blobs: [a] }));
    expect([...(await loadExcludeSet(join(dir, 'inv', 'inventory.json')))]).toEqual([a]);
    await writeFile(join(dir, 'inv', 'garbage'), 'not json');
    await expect(loadExcludeSet(join(dir, 'inv', 'garbage'))).rejects.toSatisfy((e: unknown) => isFerryError(e, 'USAGE'));
    expect((await readFile(join(dir, 'inv', 'inventory.json'), 'utf8')).length).toBeGreaterThan(0);
  });
});

describe('carryFile (export --with-ferry)', () => {
  it('copies atomically with mode 0755 whatever the umask, hashing on the way; a missing source leaves nothing', async () => {
    const out = join(dir, 'carry');
    await mkdir(out);
    const source = join(dir, 'ferry-src');
    const bytes = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
    await writeFile(source, bytes);
    await writeFile(join(out, 'ferry-linux-x64'), 'an older copy');
    const umask = process.umask(0o077);
    let tool: BundleTool | undefined;
    try {
      tool = await carryFile(source, out, 'ferry-linux-x64', 'linux/amd64');
    } finally {
      process.umask(umask);
    }
    expect(tool).toEqual({ file: 'ferry-linux-x64', size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), platform: 'linux/amd64' });
    expect((await readFile(join(out, 'ferry-linux-x64'))).equals(bytes)).toBe(true);
    expect((await stat(join(out, 'ferry-linux-x64'))).mode & 0o777).toBe(0o755);
    expect(await readdir(out)).toEqual(['ferry-linux-x64']);

    const err = await carryFile(join(dir, 'no-such-ferry'), out, 'ferry-linux-arm64', 'linux/arm64').catch((e: unknown) => e);
    expect(isFerryError(err, 'NOT_FOUND')).toBe(true);
    expect((err as Error).message).toContain(`copy ${join(dir, 'no-such-ferry')} to ${join(out, 'ferry-linux-arm64')}: `);
    expect(await readdir(out)).toEqual(['ferry-linux-x64']);
  });
});
