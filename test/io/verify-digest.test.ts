import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import { MeasureDigest, VerifyDigest } from '../../src/io/verify-digest.js';

const DATA = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(1000));

function chunks(buf: Buffer, size = 1000): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

async function run(input: Buffer, verify: VerifyDigest): Promise<{ out: Buffer; passedBeforeError: number }> {
  const got: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, done) {
      got.push(chunk);
      done();
    },
  });
  try {
    await pipeline(chunks(input), verify, sink);
  } catch (err) {
    (err as { passedBeforeError?: number }).passedBeforeError = Buffer.concat(got).length;
    throw err;
  }
  return { out: Buffer.concat(got), passedBeforeError: 0 };
}

describe('VerifyDigest', () => {
  it('passes the bytes through unchanged when digest and size match', async () => {
    const v = new VerifyDigest(digestOf(DATA), { size: DATA.length });
    const { out } = await run(DATA, v);
    expect(out.equals(DATA)).toBe(true);
    expect(v.bytes).toBe(DATA.length);
  });

  it('works without a size', async () => {
    await expect(run(DATA, new VerifyDigest(digestOf(DATA)))).resolves.toBeDefined();
  });

  it('fails at the end of the stream on a digest mismatch, naming what', async () => {
    const bad = Buffer.from(DATA);
    bad[100] = 0x21;
    const err = await run(bad, new VerifyDigest(digestOf(DATA), { what: 'blob X of app:1' })).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect((err as Error).message).toBe(`blob X of app:1: digest mismatch: content hashes to ${digestOf(bad)}`);
  });

  it('fails on a short stream with SIZE_MISMATCH', async () => {
    const err = await run(DATA.subarray(0, 10), new VerifyDigest(digestOf(DATA), { size: DATA.length })).catch((e: unknown) => e);
    expect(isFerryError(err, 'SIZE_MISMATCH')).toBe(true);
    expect((err as Error).message).toBe(`blob ${digestOf(DATA)}: got 10 bytes, expected ${DATA.length}`);
  });

  it('fails a long stream as soon as it runs past the size, without passing the excess', async () => {
    const long = Buffer.concat([DATA, DATA]);
    const err = await run(long, new VerifyDigest(digestOf(DATA), { size: DATA.length })).catch((e: unknown) => e);
    expect(isFerryError(err, 'SIZE_MISMATCH')).toBe(true);
    expect((err as Error).message).toContain(`more than the expected ${DATA.length} bytes`);
    expect((err as { passedBeforeError: number }).passedBeforeError).toBeLessThanOrEqual(DATA.length);
  });

  it('a same-size stream with other content is a DIGEST_MISMATCH', async () => {
    const other = Buffer.alloc(DATA.length, 0x41);
    const err = await run(other, new VerifyDigest(digestOf(DATA), { size: DATA.length })).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
  });

  it('verifies sha512 digests too', async () => {
    await expect(run(DATA, new VerifyDigest(digestOf(DATA, 'sha512')))).resolves.toBeDefined();
  });

  it('an empty stream verifies against the empty digest', async () => {
    await expect(run(Buffer.alloc(0), new VerifyDigest(digestOf(''), { size: 0 }))).resolves.toBeDefined();
  });
});

describe('MeasureDigest', () => {
  it('measures what flowed, readable after the end only', async () => {
    const m = new MeasureDigest();
    expect(() => m.digest).toThrow(/before the stream ended/);
    await pipeline(chunks(DATA), m, new Writable({ write: (_c, _e, done) => done() }));
    expect(m.digest).toBe(digestOf(DATA));
    expect(m.size).toBe(DATA.length);
  });
});
