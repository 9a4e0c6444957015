import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import {
  familiarReference,
  formatReference,
  parseReference,
  referenceSelector,
  withDigest,
  withTag,
} from '../../src/oci/reference.js';
import { digestOf } from '../../src/oci/digest.js';

const D = digestOf('x');

function normal(text: string): string {
  return formatReference(parseReference(text));
}

function refusal(text: string): string {
  try {
    parseReference(text);
  } catch (err) {
    expect(isFerryError(err, 'INVALID_REFERENCE')).toBe(true);
    return (err as Error).message;
  }
  throw new Error(`"${text}" was accepted`);
}

describe('parseReference: docker normalisation', () => {
  it.each([
    ['redis', 'docker.io/library/redis:latest'],
    ['redis:7', 'docker.io/library/redis:7'],
    ['library/redis', 'docker.io/library/redis:latest'],
    ['docker.io/redis', 'docker.io/library/redis:latest'],
    ['index.docker.io/redis:7', 'docker.io/library/redis:7'],
    ['registry-1.docker.io/bitnami/redis', 'docker.io/bitnami/redis:latest'],
    ['bitnami/redis:7.2', 'docker.io/bitnami/redis:7.2'],
    ['localhost/x', 'localhost/x:latest'],
    ['localhost:5000/x', 'localhost:5000/x:latest'],
    ['127.0.0.1:5000/team/app:1.2', '127.0.0.1:5000/team/app:1.2'],
    ['quay.io/a/b/c:v1', 'quay.io/a/b/c:v1'],
    ['[::1]:5000/x:t', '[::1]:5000/x:t'],
    ['  redis  ', 'docker.io/library/redis:latest'],
    ['a__b/c-d.e_f', 'docker.io/a__b/c-d.e_f:latest'],
    // No registry part: "localhost:5000" alone is the image localhost with tag 5000, as in docker.
    ['localhost:5000', 'docker.io/library/localhost:5000'],
  ])('%s -> %s', (text, want) => {
    expect(normal(text)).toBe(want);
  });

  it('splits host:port/a/b:tag@digest into its parts', () => {
    const ref = parseReference(`host.example:5000/a/b:tag@${D}`);
    expect(ref).toEqual({ registry: 'host.example:5000', repository: 'a/b', tag: 'tag', digest: D });
    expect(formatReference(ref)).toBe(`host.example:5000/a/b:tag@${D}`);
  });

  it('a digest without a tag gets no default tag', () => {
    const ref = parseReference(`redis@${D}`);
    expect(ref).toEqual({ registry: 'docker.io', repository: 'library/redis', digest: D });
    expect(referenceSelector(ref)).toBe(D);
  });

  it('the digest wins over the tag when asking a registry', () => {
    expect(referenceSelector(parseReference(`redis:7@${D}`))).toBe(D);
    expect(referenceSelector(parseReference('redis:7'))).toBe('7');
  });
});

describe('parseReference: invalid references have clear errors', () => {
  it.each([
    ['', 'empty'],
    ['   ', 'empty'],
    ['Redis', 'lowercase'],
    ['redis:', 'bad tag ""'],
    ['redis:-x', 'bad tag "-x"'],
    [`redis:${'a'.repeat(129)}`, 'bad tag'],
    ['redis@sha256:abc', 'bad digest "sha256:abc"'],
    ['redis@md5:0123', 'bad digest'],
    ['a//b', 'bad path component ""'],
    ['a/b/', 'bad path component ""'],
    ['-a/b', 'bad path component "-a"'],
    ['a/b_', 'bad path component "b_"'],
    ['host:abc/x', 'bad registry host "host:abc"'],
    ['ex_ample.com/x', 'bad registry host'],
    ['localhost:5000/', 'missing repository name'],
    [':tag', 'missing repository name'],
    [`@${D}`, 'missing repository name'],
    [`x/${'a'.repeat(260)}`, 'longer than 255'],
  ])('%j is refused (%s)', (text, why) => {
    const message = refusal(text);
    expect(message).toContain(`invalid image reference "${text}"`);
    expect(message).toContain(why);
  });

  it('carries a hint with examples', () => {
    try {
      parseReference('UPPER');
      expect.unreachable();
    } catch (err) {
      expect(isFerryError(err) && err.hint).toMatch(/redis:7/);
    }
  });
});

describe('familiarReference', () => {
  it.each([
    ['redis', 'redis:latest'],
    ['docker.io/library/redis:7', 'redis:7'],
    ['bitnami/redis', 'bitnami/redis:latest'],
    ['localhost:5000/x:1', 'localhost:5000/x:1'],
    ['quay.io/library/x', 'quay.io/library/x:latest'],
    [`redis@${D}`, `redis@${D}`],
  ])('%s -> %s', (text, want) => {
    expect(familiarReference(parseReference(text))).toBe(want);
  });
});

describe('withTag / withDigest', () => {
  it('withTag drops a digest, withDigest keeps the tag', () => {
    const ref = parseReference(`redis:7@${D}`);
    expect(formatReference(withTag(ref, '8'))).toBe('docker.io/library/redis:8');
    expect(formatReference(withDigest(parseReference('redis:7'), D))).toBe(`docker.io/library/redis:7@${D}`);
  });
});
