import { readdir } from 'node:fs/promises';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Spool } from '../../src/transfer/spool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('spool');
});
afterAll(async () => {
  await removeDir(dir);
});

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('Spool', () => {
  it('replays a one-shot stream to several readers, each from byte 0, while it still arrives', async () => {
    const source = new PassThrough();
    const spool = await Spool.create(source, dir, 'follow');
    const early = collect(spool.open());
    source.write(Buffer.from('hello '));
    await new Promise((r) => setTimeout(r, 20));
    const middle = collect(spool.open());
    source.end(Buffer.from('world'));
    expect(await spool.done).toBe(11);
    const late = collect(spool.open());
    expect((await early).toString()).toBe('hello world');
    expect((await middle).toString()).toBe('hello world');
    expect((await late).toString()).toBe('hello world');
    await spool.dispose();
    expect(await readdir(dir)).toEqual([]);
  });

  it('moves the source on without waiting for a slow reader (the bundle is not held back by an upload)', async () => {
    const big = Buffer.alloc(8 << 20, 7);
    const spool = await Spool.create(Readable.from([big.subarray(0, 4 << 20), big.subarray(4 << 20)]), dir, 'slow');
    const reader = spool.open();
    reader.pause();
    expect(await spool.done).toBe(big.length);
    expect((await collect(reader)).equals(big)).toBe(true);
    await spool.dispose();
  });

  it('fails every reader with the source error (a damaged blob is never sent as good)', async () => {
    const source = new PassThrough();
    const spool = await Spool.create(source, dir, 'fail');
    const reader = collect(spool.open());
    source.write(Buffer.from('partial'));
    source.destroy(new Error('blob sha256:abc is damaged'));
    await expect(spool.done).rejects.toThrow(/damaged/);
    await expect(reader).rejects.toThrow(/damaged/);
    await spool.dispose();
    expect(await readdir(dir)).toEqual([]);
  });

  it('dispose while the source still flows stops it and ends readers without an unhandled error', async () => {
    const source = new PassThrough();
    const spool = await Spool.create(source, dir, 'dispose');
    const reader = spool.open();
    reader.on('data', () => undefined);
    source.write(Buffer.from('abc'));
    await new Promise((r) => setTimeout(r, 10));
    await spool.dispose();
    expect(source.destroyed).toBe(true);
    expect(reader.destroyed).toBe(true);
    expect(await readdir(dir)).toEqual([]);
    expect(() => spool.open()).toThrow(/after it was removed/);
  });
});
