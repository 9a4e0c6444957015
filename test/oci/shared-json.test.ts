import { randomBytes } from 'node:crypto';
import { getHeapSnapshot } from 'node:v8';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { parseImageConfig, parseManifest } from '../../src/oci/manifest.js';
import { newStringTable, parseSharedJson } from '../../src/oci/shared-json.js';

/** How many strings in this process's heap have exactly this text (V8's own count, from a heap snapshot). */
async function copiesOf(text: string): Promise<number> {
  const chunks: Buffer[] = [];
  for await (const chunk of getHeapSnapshot()) chunks.push(chunk as Buffer);
  const snapshot = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const { node_fields: fields, node_types: [types] } = snapshot.snapshot.meta;
  const type = fields.indexOf('type');
  const name = fields.indexOf('name');
  let copies = 0;
  for (let i = 0; i < snapshot.nodes.length; i += fields.length) {
    if (types[snapshot.nodes[i + type]!] === 'string' && snapshot.strings[snapshot.nodes[i + name]!] === text) copies++;
  }
  return copies;
}

describe('parseSharedJson', () => {
  it('gives what JSON.parse gives', () => {
    const text = JSON.stringify({ a: 'x', n: 1.5, list: ['sha256:' + 'a'.repeat(64), null, true, { deep: ['y'.repeat(500)] }], empty: {} });
    expect(parseSharedJson(text)).toEqual(JSON.parse(text));
    expect(parseSharedJson('"just a string"')).toBe('just a string');
    expect(() => parseSharedJson('{"a":')).toThrow(SyntaxError);
  });

  it('keeps one copy of a digest that many manifests and configs name', async () => {
    // Made at run time, so the only copies are the parsed ones (and the one here).
    const config = `sha256:${randomBytes(32).toString('hex')}`;
    const layer = `sha256:${randomBytes(32).toString('hex')}`;
    const kept: unknown[] = [];
    for (let i = 0; i < 50; i++) {
      const manifest = {
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: 100 + i },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer, size: 1000 }],
      };
      kept.push(parseManifest(Buffer.from(JSON.stringify(manifest)), undefined, `manifest ${i}`));
      kept.push(parseImageConfig(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layer] } })), `config ${i}`));
    }
    // 150 references to the layer digest and 50 to the config's: one string each, and ours.
    expect(await copiesOf(layer)).toBeLessThanOrEqual(2);
    expect(await copiesOf(config)).toBeLessThanOrEqual(2);
    expect(kept).toHaveLength(100);
  });

  it('shares within a document given its own table, and keeps nothing after it', async () => {
    const digest = `sha256:${randomBytes(32).toString('hex')}`;
    const text = JSON.stringify({ images: Array.from({ length: 40 }, () => ({ digest, layers: [{ blob: digest }] })) });
    let own: unknown = parseSharedJson(text, newStringTable());
    expect(own).toEqual(JSON.parse(text));
    expect(await copiesOf(digest)).toBeLessThanOrEqual(2);
    own = undefined;
    // Dropped with the document: no table of the process's holds it (ours is the one copy left).
    expect(await copiesOf(digest)).toBeLessThanOrEqual(1);
    // The process's table keeps one copy after the document is gone: what the own table avoids.
    let shared: unknown = parseSharedJson(text);
    shared = undefined;
    expect(await copiesOf(digest)).toBe(2);
    expect([own, shared]).toEqual([undefined, undefined]);
  });

  it("parses with no sharing at all when asked ('none'): nothing of it stays after it", async () => {
    const digest = `sha256:${randomBytes(32).toString('hex')}`;
    const text = JSON.stringify({ a: [digest, digest], b: { c: 1 } });
    let plain: unknown = parseSharedJson(text, 'none');
    expect(plain).toEqual(JSON.parse(text));
    plain = undefined;
    // Only the text itself holds the digest: no table kept a copy.
    expect(await copiesOf(digest)).toBe(1);
    expect(plain).toBeUndefined();
    expect(() => parseSharedJson('{', 'none')).toThrow(SyntaxError);
  });

  it('leaves the errors of a bad document as they were', () => {
    let caught: unknown;
    try {
      parseManifest(Buffer.from('{"schemaVersion":'), undefined, 'manifest of x');
    } catch (err) {
      caught = err;
    }
    expect(isFerryError(caught, 'INVALID_MANIFEST')).toBe(true);
    expect((caught as Error).message).toBe('manifest of x: not valid JSON');
  });
});
