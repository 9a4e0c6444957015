import { describe, expect, it } from 'vitest';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { parseReference } from '../../src/oci/reference.js';
import { buildIndex, indexIsComplete, rewriteManifest } from '../../src/oci/rewrite-manifest.js';
import { parseDestination, reroot } from '../../src/transfer/push-target.js';

const d = (s: string): Digest => digestOf(s);

function dockerManifest(): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.dockerManifest,
      config: { mediaType: MediaType.dockerConfig, size: 10, digest: d('config') },
      layers: [
        { mediaType: MediaType.dockerLayerGzip, size: 100, digest: d('l0') },
        { mediaType: MediaType.dockerLayer, size: 300, digest: d('l1'), urls: ['https://example/l1'], annotations: { keep: 'me' } },
      ],
    }, null, 3),
  );
}

describe('rewriteManifest', () => {
  it('replaces only the given layers, keeps other fields and their order, drops urls', () => {
    const out = rewriteManifest(dockerManifest(), MediaType.dockerManifest, [undefined, { digest: d('l1.gz'), size: 120, compression: 'gzip' }], 'm');
    const json = JSON.parse(out.raw.toString()) as { mediaType: string; config: { mediaType: string }; layers: Array<Record<string, unknown>> };
    expect(out.mediaType).toBe(MediaType.dockerManifest);
    expect(out.digest).toBe(digestOf(out.raw));
    expect(json.layers[0]).toEqual({ mediaType: MediaType.dockerLayerGzip, size: 100, digest: d('l0') });
    expect(json.layers[1]).toEqual({ mediaType: MediaType.dockerLayerGzip, size: 120, digest: d('l1.gz'), annotations: { keep: 'me' } });
    expect(Object.keys(json.layers[1]!)).toEqual(['mediaType', 'size', 'digest', 'annotations']);
    expect(json.config.mediaType).toBe(MediaType.dockerConfig);
  });

  it('turns a Docker manifest into an OCI one for zstd (Docker schema 2 has no zstd type), same config bytes', () => {
    const out = rewriteManifest(dockerManifest(), MediaType.dockerManifest, [undefined, { digest: d('l1.zst'), size: 90, compression: 'zstd' }], 'm');
    const json = JSON.parse(out.raw.toString()) as { mediaType: string; config: { mediaType: string; digest: string }; layers: Array<{ mediaType: string }> };
    expect(out.mediaType).toBe(MediaType.ociManifest);
    expect(json.mediaType).toBe(MediaType.ociManifest);
    expect(json.config).toMatchObject({ mediaType: MediaType.ociConfig, digest: d('config') });
    expect(json.layers.map((l) => l.mediaType)).toEqual([MediaType.ociLayerGzip, MediaType.ociLayerZstd]);
  });
});

describe('buildIndex', () => {
  const platformA = { os: 'linux', architecture: 'amd64' };
  const platformB = { os: 'linux', architecture: 'arm64', variant: 'v8' };
  const source = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [
        { mediaType: MediaType.ociManifest, digest: d('a'), size: 1, platform: platformA },
        { mediaType: MediaType.ociManifest, digest: d('b'), size: 2, platform: platformB, annotations: { x: 'y' } },
      ],
      annotations: { 'org.opencontainers.image.created': 'then' },
    }),
  );
  const info = { digest: digestOf(source), mediaType: MediaType.ociIndex, raw: source };

  it('keeps the source index byte for byte when every image went up unchanged', () => {
    const out = buildIndex(
      [
        { sourceDigest: d('a'), digest: d('a'), size: 1, mediaType: MediaType.ociManifest, platform: platformA },
        { sourceDigest: d('b'), digest: d('b'), size: 2, mediaType: MediaType.ociManifest, platform: platformB },
      ],
      info,
      'i',
    );
    expect(out.raw.equals(source)).toBe(true);
    expect(out.digest).toBe(info.digest);
  });

  it('rewrites changed entries, drops those not carried, keeps annotations', () => {
    const out = buildIndex([{ sourceDigest: d('b'), digest: d('b2'), size: 5, mediaType: MediaType.ociManifest, platform: platformB }], info, 'i');
    const json = JSON.parse(out.raw.toString()) as { manifests: Array<Record<string, unknown>>; annotations: unknown };
    expect(json.manifests).toEqual([{ mediaType: MediaType.ociManifest, digest: d('b2'), size: 5, platform: platformB, annotations: { x: 'y' } }]);
    expect(json.annotations).toEqual({ 'org.opencontainers.image.created': 'then' });
    expect(out.digest).not.toBe(info.digest);
  });

  it('an index is complete when every manifest it lists is carried (more carried is fine), else partial', () => {
    expect(indexIsComplete(info, [d('b'), d('a')], 'i')).toBe(true);
    expect(indexIsComplete(info, [d('a'), d('b'), d('c')], 'i')).toBe(true);
    expect(indexIsComplete(info, [d('b')], 'i')).toBe(false);
    const notIndex = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: d('c'), size: 1 }, layers: [] }));
    expect(() => indexIsComplete({ digest: digestOf(notIndex), mediaType: MediaType.ociManifest, raw: notIndex }, [], 'i')).toThrow(/is not an index/);
  });

  it('makes a Docker manifest list for Docker manifests when there is no source index', () => {
    const out = buildIndex([{ sourceDigest: d('a'), digest: d('a'), size: 1, mediaType: MediaType.dockerManifest, platform: platformA }], undefined, 'i');
    expect(out.mediaType).toBe(MediaType.dockerManifestList);
  });
});

describe('re-rooting for push --all', () => {
  it('replaces the registry and keeps the repository path under the prefix', () => {
    const dest = parseDestination('registry.internal:5000/mirror/');
    expect(reroot(parseReference('redis:7'), dest)).toEqual({ registry: 'registry.internal:5000', repository: 'mirror/library/redis', tag: '7' });
    expect(reroot(parseReference('127.0.0.1:5055/fx/app:1'), dest)).toEqual({ registry: 'registry.internal:5000', repository: 'mirror/fx/app', tag: '1' });
    expect(reroot(parseReference('127.0.0.1:5055/fx/app:1'), parseDestination('127.0.0.1:5000'))).toEqual({ registry: '127.0.0.1:5000', repository: 'fx/app', tag: '1' });
    expect(() => parseDestination('mirror/prefix')).toThrow(/not a registry host/);
  });
});
