import { describe, expect, it } from 'vitest';
import { dockerSaveManifest, imageConfig, imageManifest, layoutIndex, scratchConfig, setConfigDiffIds, setManifestLayers } from '../../src/oci/build-image.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import type { ImageConfig } from '../../src/oci/manifest.js';
import { MediaType } from '../../src/oci/media-types.js';

const d = (s: string): Digest => digestOf(s);

describe('oci/build-image', () => {
  it('imageConfig keeps the base fields in place and appends new ones in a fixed order', () => {
    const base: ImageConfig = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [d('a')] }, config: { Cmd: ['sh'] } };
    const out = imageConfig(base, { created: '2026-01-01T00:00:00.000Z', author: 'me', config: { Cmd: ['true'] }, diffIds: [d('a'), d('b')], history: [{ created_by: 'x' }] });
    expect(Object.keys(JSON.parse(out.raw.toString()) as object)).toEqual(['architecture', 'os', 'rootfs', 'config', 'created', 'author', 'history']);
    expect(out.config.rootfs.diff_ids).toEqual([d('a'), d('b')]);
    expect(out.digest).toBe(digestOf(out.raw));
    // The same bytes as the spread the callers wrote before: digests of committed images stay.
    const spread = { ...base, created: '2026-01-01T00:00:00.000Z', author: 'me', config: { Cmd: ['true'] }, rootfs: { type: 'layers', diff_ids: [d('a'), d('b')] }, history: [{ created_by: 'x' }] };
    expect(out.raw.equals(Buffer.from(JSON.stringify(spread)))).toBe(true);
    expect(base.rootfs.diff_ids).toEqual([d('a')]);
  });

  it('scratchConfig names only the platform and no layers', () => {
    expect(scratchConfig({ os: 'linux', architecture: 'arm', variant: 'v7' })).toEqual({ architecture: 'arm', os: 'linux', variant: 'v7', rootfs: { type: 'layers', diff_ids: [] } });
  });

  it('setConfigDiffIds replaces only rootfs.diff_ids, in place', () => {
    const raw = Buffer.from('{"os":"linux","rootfs":{"type":"layers","diff_ids":["x"],"extra":1},"architecture":"amd64"}');
    expect(setConfigDiffIds(raw, [d('n')], 'c').toString()).toBe(`{"os":"linux","rootfs":{"type":"layers","diff_ids":["${d('n')}"],"extra":1},"architecture":"amd64"}`);
    expect(() => setConfigDiffIds(Buffer.from('[1]'), [], 'config of x')).toThrow(/config of x: not a JSON object/);
  });

  it('setManifestLayers points at the new config, replaces the given layers, drops their urls', () => {
    const raw = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: d('c'), size: 1 },
      layers: [{ mediaType: MediaType.ociLayerGzip, digest: d('l0'), size: 2 }, { mediaType: MediaType.ociLayer, digest: d('l1'), size: 3, urls: ['u'], annotations: { k: 'v' } }],
      annotations: { a: 'b' },
    }));
    const out = JSON.parse(setManifestLayers(raw, { digest: d('c2'), size: 9 }, [undefined, { mediaType: MediaType.ociLayerZstd, digest: d('z'), size: 4 }], 'm').toString()) as Record<string, unknown>;
    expect(out).toEqual({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: d('c2'), size: 9 },
      layers: [{ mediaType: MediaType.ociLayerGzip, digest: d('l0'), size: 2 }, { mediaType: MediaType.ociLayerZstd, digest: d('z'), size: 4, annotations: { k: 'v' } }],
      annotations: { a: 'b' },
    });
    expect(() => setManifestLayers(raw, { digest: d('c2'), size: 9 }, [undefined], 'manifest of x')).toThrow(/manifest of x: expected 1 layers/);
  });

  it('imageManifest, dockerSaveManifest and layoutIndex write their key orders', () => {
    const layer = { mediaType: MediaType.dockerLayerGzip, digest: d('l'), size: 5 };
    const m = imageManifest(MediaType.dockerManifest, { digest: d('c'), size: 7 }, [layer]);
    expect(m.raw.toString()).toBe(`{"schemaVersion":2,"mediaType":"${MediaType.dockerManifest}","config":{"mediaType":"${MediaType.dockerConfig}","digest":"${d('c')}","size":7},"layers":[{"mediaType":"${MediaType.dockerLayerGzip}","digest":"${d('l')}","size":5}]}`);
    expect(m.digest).toBe(digestOf(m.raw));
    const saved = dockerSaveManifest({ digest: d('c'), size: 7 }, [layer]);
    expect(saved.raw.toString()).toContain(`\n   "config": {\n      "mediaType": "${MediaType.dockerConfig}",\n      "size": 7,`);
    expect(saved.manifest.layers).toEqual([layer]);
    expect(layoutIndex([{ digest: d('m') }], { trailingNewline: true }).toString()).toBe(`{"schemaVersion":2,"mediaType":"${MediaType.ociIndex}","manifests":[{"digest":"${d('m')}"}]}\n`);
  });
});
