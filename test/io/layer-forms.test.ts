import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { layerFromBlob, layerFromTar, decompressLayer } from '../../src/io/layer-forms.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

let dir: string;
let tar: Buffer;
let diffId: Digest;
const blobs: Record<'gzip' | 'zstd', { path: string; bytes: Buffer }> = {} as never;

beforeAll(async () => {
  dir = await makeTempDir('layer-forms');
  const root = join(dir, 'rootfs');
  await mkdir(join(root, 'etc'), { recursive: true });
  await writeFile(join(root, 'etc', 'motd'), 'hello from a layer\n');
  await writeFile(join(root, 'big'), Buffer.alloc(300_000, 'abc'));
  // Real tools make the layer forms: GNU tar, gzip, zstd.
  await run('tar', ['-C', root, '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '-cf', join(dir, 'layer.tar'), '.']);
  await run('sh', ['-c', `gzip -9 -n -c layer.tar > layer.tar.gz && zstd -q -19 -o layer.tar.zst layer.tar`], { cwd: dir });
  tar = await readFile(join(dir, 'layer.tar'));
  diffId = digestOf(tar);
  for (const c of ['gzip', 'zstd'] as const) {
    const path = join(dir, c === 'gzip' ? 'layer.tar.gz' : 'layer.tar.zst');
    blobs[c] = { path, bytes: await readFile(path) };
  }
});

afterAll(async () => {
  await removeDir(dir);
});

function blobLayer(c: 'gzip' | 'zstd', opts: { diffId?: Digest; bytes?: Buffer } = {}) {
  const bytes = opts.bytes ?? blobs[c].bytes;
  return layerFromBlob({
    descriptor: { mediaType: c === 'gzip' ? MediaType.ociLayerGzip : MediaType.ociLayerZstd, digest: digestOf(blobs[c].bytes), size: blobs[c].bytes.length },
    diffId: opts.diffId ?? diffId,
    openBlob: async () => (opts.bytes ? Readable.from([bytes]) : createReadStream(blobs[c].path)),
    what: 'test:1',
  });
}

describe('layerFromBlob', () => {
  it.each(['gzip', 'zstd'] as const)('%s: tar() decompresses and verifies the diffId', async (c) => {
    const layer = blobLayer(c);
    expect(layer.stored).toBe('blob');
    expect(layer.diffId).toBe(diffId);
    const out = await collect(await layer.tar());
    expect(out.equals(tar)).toBe(true);
    const blob = await collect(await layer.blob());
    expect(blob.equals(blobs[c].bytes)).toBe(true);
  });

  it.each(['gzip', 'zstd'] as const)('%s: a wrong diffId fails the tar stream with DIGEST_MISMATCH', async (c) => {
    const wrong = digestOf('not this');
    const err = await collect(await blobLayer(c, { diffId: wrong }).tar()).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect((err as Error).message).toContain(`test:1 layer ${digestOf(blobs[c].bytes)} (diffId ${wrong})`);
  });

  it.each(['gzip', 'zstd'] as const)('%s: a corrupted blob fails both blob() and tar()', async (c) => {
    const bad = Buffer.from(blobs[c].bytes);
    // Flip a byte inside the compressed data (past the header): the decompressor or the digest catches it.
    bad[Math.floor(bad.length / 2)] = bad[Math.floor(bad.length / 2)]! ^ 0xff;
    const e1 = await collect(await blobLayer(c, { bytes: bad }).blob()).catch((e: unknown) => e);
    expect(isFerryError(e1, 'DIGEST_MISMATCH')).toBe(true);
    const e2 = await collect(await blobLayer(c, { bytes: bad }).tar()).catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(Error);
  });

  it('a truncated blob is a SIZE_MISMATCH', async () => {
    const short = blobs.gzip.bytes.subarray(0, 100);
    const err = await collect(await blobLayer('gzip', { bytes: short }).blob()).catch((e: unknown) => e);
    expect(isFerryError(err, 'SIZE_MISMATCH')).toBe(true);
  });

  it('an uncompressed blob is its own tar', async () => {
    const layer = layerFromBlob({
      descriptor: { mediaType: MediaType.dockerLayer, digest: diffId, size: tar.length },
      diffId,
      openBlob: async () => Readable.from([tar]),
      what: 't',
    });
    expect((await collect(await layer.tar())).equals(tar)).toBe(true);
  });

  it('an unknown media type is UNSUPPORTED and does not open the blob', async () => {
    let opened = false;
    const layer = layerFromBlob({
      descriptor: { mediaType: 'application/x-weird', digest: diffId, size: tar.length },
      diffId,
      openBlob: async () => {
        opened = true;
        return Readable.from([tar]);
      },
      what: 't',
    });
    const err = await layer.tar().catch((e: unknown) => e);
    expect(isFerryError(err, 'UNSUPPORTED')).toBe(true);
    expect(opened).toBe(false);
  });
});

describe('layerFromTar', () => {
  it('tar() verifies diffId and size; blob() is the tar when the descriptor names it', async () => {
    const layer = layerFromTar({
      descriptor: { mediaType: MediaType.dockerLayer, digest: diffId, size: tar.length },
      diffId,
      tarSize: tar.length,
      openTar: async () => Readable.from([tar]),
      what: 't',
    });
    expect(layer.stored).toBe('tar');
    expect(layer.tarSize).toBe(tar.length);
    expect((await collect(await layer.tar())).equals(tar)).toBe(true);
    expect((await collect(await layer.blob())).equals(tar)).toBe(true);
  });

  it('blob() is NOT_FOUND when the descriptor names a compressed blob', async () => {
    const layer = layerFromTar({
      descriptor: { mediaType: MediaType.ociLayerGzip, digest: digestOf(blobs.gzip.bytes), size: blobs.gzip.bytes.length },
      diffId,
      openTar: async () => Readable.from([tar]),
      what: 'raw-bundle app:1',
    });
    expect(layer.tarSize).toBeUndefined();
    const err = await layer.blob().catch((e: unknown) => e);
    expect(isFerryError(err, 'NOT_FOUND')).toBe(true);
    expect((err as Error).message).toContain('raw-bundle app:1: blob sha256:');
  });

  it('a tampered tar fails with DIGEST_MISMATCH, a short one with SIZE_MISMATCH', async () => {
    const bad = Buffer.from(tar);
    bad[600] = bad[600]! ^ 1;
    const mk = (bytes: Buffer) =>
      layerFromTar({
        descriptor: { mediaType: MediaType.dockerLayer, digest: diffId, size: tar.length },
        diffId,
        tarSize: tar.length,
        openTar: async () => Readable.from([bytes]),
        what: 't',
      });
    const e1 = await collect(await mk(bad).tar()).catch((e: unknown) => e);
    expect(isFerryError(e1, 'DIGEST_MISMATCH')).toBe(true);
    const e2 = await collect(await mk(tar.subarray(0, 1024)).tar()).catch((e: unknown) => e);
    expect(isFerryError(e2, 'SIZE_MISMATCH')).toBe(true);
  });
});

describe('decompressLayer', () => {
  it('refuses a non-layer media type', () => {
    expect(() => decompressLayer(Readable.from([]), MediaType.ociConfig, 'x')).toThrow(/cannot decompress layer media type/);
  });
});
