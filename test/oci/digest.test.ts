import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import {
  Digester,
  digestAlgorithm,
  digestHex,
  digestOf,
  isDigest,
  parseDigest,
  sha256Digest,
  shortDigest,
} from '../../src/oci/digest.js';

const HEX = createHash('sha256').update('hello').digest('hex');

describe('digests', () => {
  it('digestOf hashes bytes and strings alike', () => {
    expect(digestOf('hello')).toBe(`sha256:${HEX}`);
    expect(digestOf(Buffer.from('hello'))).toBe(`sha256:${HEX}`);
    expect(digestOf('hello', 'sha512')).toBe(`sha512:${createHash('sha512').update('hello').digest('hex')}`);
  });

  it('isDigest accepts sha256/sha512 of the right length, lowercase only', () => {
    expect(isDigest(`sha256:${HEX}`)).toBe(true);
    expect(isDigest(`sha512:${'a'.repeat(128)}`)).toBe(true);
    expect(isDigest(`sha512:${'a'.repeat(64)}`)).toBe(false);
    expect(isDigest(`sha256:${HEX.slice(1)}`)).toBe(false);
    expect(isDigest(`sha256:${HEX}0`)).toBe(false);
    expect(isDigest(`sha256:${HEX.toUpperCase()}`)).toBe(false);
    expect(isDigest(`SHA256:${HEX}`)).toBe(false);
    expect(isDigest(`md5:${'a'.repeat(32)}`)).toBe(false);
    expect(isDigest(HEX)).toBe(false);
    expect(isDigest(`sha256:../../${HEX.slice(6)}`)).toBe(false);
    expect(isDigest(` sha256:${HEX}`)).toBe(false);
    expect(isDigest(`sha256:${HEX}\n`)).toBe(false);
  });

  it('parseDigest names what was invalid', () => {
    expect(parseDigest(`sha256:${HEX}`)).toBe(`sha256:${HEX}`);
    try {
      parseDigest('sha256:xyz', 'config digest');
      expect.unreachable();
    } catch (err) {
      expect(isFerryError(err, 'INVALID_DIGEST')).toBe(true);
      expect((err as Error).message).toBe('invalid config digest "sha256:xyz": expected sha256:<64 hex digits>');
    }
  });

  it('splits and shortens', () => {
    const d = sha256Digest(HEX);
    expect(digestAlgorithm(d)).toBe('sha256');
    expect(digestHex(d)).toBe(HEX);
    expect(shortDigest(d)).toBe(HEX.slice(0, 12));
    expect(() => sha256Digest('abc')).toThrow(/invalid digest/);
  });

  it('Digester hashes chunks incrementally and counts bytes', () => {
    const d = new Digester();
    d.update(Buffer.from('hel'));
    d.update(Buffer.from('lo'));
    expect(d.size).toBe(5);
    expect(d.digest()).toBe(`sha256:${HEX}`);
  });
});
