import { describe, expect, it } from 'vitest';
import { isFerryError, type ErrorCode } from '../../src/errors.js';
import { parseDescriptor } from '../../src/oci/descriptor.js';
import { digestOf } from '../../src/oci/digest.js';
import {
  MAX_MANIFEST_BYTES,
  checkLayers,
  configPlatform,
  parseImageConfig,
  parseManifest,
  type ImageManifest,
} from '../../src/oci/manifest.js';
import { MediaType, layerCompression, layerMediaTypeFor } from '../../src/oci/media-types.js';

const D1 = digestOf('config');
const D2 = digestOf('layer');

function json(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v));
}

function failure(fn: () => unknown, code: ErrorCode): string {
  try {
    fn();
  } catch (err) {
    if (!isFerryError(err, code)) throw err;
    return err.message;
  }
  throw new Error('no error thrown');
}

const ociManifest = {
  schemaVersion: 2,
  mediaType: MediaType.ociManifest,
  config: { mediaType: MediaType.ociConfig, digest: D1, size: 6 },
  layers: [{ mediaType: MediaType.ociLayerGzip, digest: D2, size: 5, annotations: { a: 'b', n: 3 } }],
  annotations: { 'org.opencontainers.image.created': 'now' },
};

describe('parseManifest', () => {
  it('parses an OCI image manifest', () => {
    const p = parseManifest(json(ociManifest), undefined, 'app');
    expect(p.kind).toBe('image');
    if (p.kind !== 'image') return;
    expect(p.mediaType).toBe(MediaType.ociManifest);
    expect(p.manifest.config.digest).toBe(D1);
    // Non-string annotation values are dropped, not trusted.
    expect(p.manifest.layers[0]!.annotations).toEqual({ a: 'b' });
    expect(p.manifest.annotations).toEqual({ 'org.opencontainers.image.created': 'now' });
  });

  it('parses a Docker schema 2 manifest and a manifest list', () => {
    const docker = { ...ociManifest, mediaType: MediaType.dockerManifest };
    expect(parseManifest(json(docker), MediaType.dockerManifest, 'x').mediaType).toBe(MediaType.dockerManifest);
    const list = {
      schemaVersion: 2,
      mediaType: MediaType.dockerManifestList,
      manifests: [
        { mediaType: MediaType.dockerManifest, digest: D1, size: 10, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { mediaType: MediaType.dockerManifest, digest: D2, size: 10, platform: { os: 'linux', architecture: 'amd64', variant: '' } },
      ],
    };
    const p = parseManifest(json(list), undefined, 'x');
    expect(p.kind).toBe('index');
    if (p.kind !== 'index') return;
    expect(p.manifest.manifests.map((m) => m.platform)).toEqual([
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      { os: 'linux', architecture: 'amd64' },
    ]);
  });

  it('tells an index from a manifest by shape when mediaType is absent', () => {
    const { mediaType: _m, ...bare } = ociManifest;
    expect(parseManifest(json(bare), undefined, 'x').mediaType).toBe(MediaType.ociManifest);
    expect(parseManifest(json(bare), 'application/json', 'x').mediaType).toBe(MediaType.ociManifest);
    const index = parseManifest(json({ schemaVersion: 2, manifests: [] }), undefined, 'x');
    expect(index.kind).toBe('index');
    expect(index.mediaType).toBe(MediaType.ociIndex);
  });

  it('the document mediaType wins over a Content-Type with parameters', () => {
    const p = parseManifest(json(ociManifest), `${MediaType.dockerManifest}; charset=utf-8`, 'x');
    expect(p.mediaType).toBe(MediaType.ociManifest);
    const { mediaType: _m, ...bare } = ociManifest;
    expect(parseManifest(json(bare), `${MediaType.dockerManifest}; charset=utf-8`, 'x').mediaType).toBe(MediaType.dockerManifest);
  });

  it('refuses Docker schema 1 with a clear UNSUPPORTED message and hint', () => {
    const schema1 = { schemaVersion: 1, name: 'library/redis', tag: 'latest', fsLayers: [], history: [] };
    for (const [doc, type] of [
      [schema1, undefined],
      [schema1, MediaType.dockerSchema1Signed],
      [{ ...ociManifest }, MediaType.dockerSchema1],
      [{ ...ociManifest, mediaType: MediaType.dockerSchema1Signed }, undefined],
    ] as const) {
      try {
        parseManifest(json(doc), type, 'docker.io/library/old:1');
        expect.unreachable();
      } catch (err) {
        expect(isFerryError(err, 'UNSUPPORTED')).toBe(true);
        expect((err as Error).message).toBe('docker.io/library/old:1: Docker schema 1 manifests are not supported');
        expect(isFerryError(err) && err.hint).toMatch(/schema 2/);
      }
    }
  });

  it('refuses artifacts and unknown types as UNSUPPORTED', () => {
    const msg = failure(
      () => parseManifest(json({ ...ociManifest, mediaType: 'application/vnd.oci.artifact.manifest.v1+json' }), undefined, 'x'),
      'UNSUPPORTED',
    );
    expect(msg).toContain('unsupported manifest media type "application/vnd.oci.artifact.manifest.v1+json"');
  });

  it.each<[string, unknown, string]>([
    ['not JSON', '{', 'not valid JSON'],
    ['an array', [], 'not a JSON object'],
    ['null', null, 'not a JSON object'],
    ['schemaVersion 3', { ...ociManifest, schemaVersion: 3 }, 'unsupported schemaVersion 3'],
    ['no schemaVersion', { ...ociManifest, schemaVersion: undefined }, 'unsupported schemaVersion undefined'],
    ['no layers', { ...ociManifest, layers: undefined }, 'manifest has no layers list'],
    ['index without manifests', { schemaVersion: 2, mediaType: MediaType.ociIndex }, 'index has no manifests list'],
    ['no config', { ...ociManifest, config: undefined }, 'invalid descriptor in m config: not an object'],
    ['layer without mediaType', { ...ociManifest, layers: [{ digest: D2, size: 1 }] }, 'invalid descriptor in m layers[0]: mediaType missing'],
    ['layer with bad digest', { ...ociManifest, layers: [{ mediaType: MediaType.ociLayer, digest: 'sha256:../x', size: 1 }] }, 'bad digest "sha256:../x"'],
    ['layer with negative size', { ...ociManifest, layers: [{ mediaType: MediaType.ociLayer, digest: D2, size: -1 }] }, 'bad size "-1"'],
    ['layer with fractional size', { ...ociManifest, layers: [{ mediaType: MediaType.ociLayer, digest: D2, size: 1.5 }] }, 'bad size "1.5"'],
    ['layer with string size', { ...ociManifest, layers: [{ mediaType: MediaType.ociLayer, digest: D2, size: '1' }] }, 'bad size "1"'],
  ])('invalid: %s', (_name, doc, why) => {
    const bytes = typeof doc === 'string' ? Buffer.from(doc) : json(doc);
    const msg = failure(() => parseManifest(bytes, undefined, 'm'), 'INVALID_MANIFEST');
    expect(msg).toMatch(/(^| )m[: ]/);
    expect(msg).toContain(why);
  });

  it('refuses documents over the size limit before parsing them', () => {
    const big = Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20);
    expect(failure(() => parseManifest(big, undefined, 'huge'), 'INVALID_MANIFEST')).toContain('over the');
  });
});

describe('parseDescriptor', () => {
  it('keeps urls, platform, artifactType; drops junk', () => {
    const d = parseDescriptor(
      {
        mediaType: MediaType.ociManifest,
        digest: D1,
        size: 0,
        urls: ['https://x', 3],
        platform: { os: 'linux', architecture: 'arm', variant: 'v7', 'os.version': '1' },
        artifactType: 'a/b',
      },
      'w',
    );
    expect(d).toEqual({
      mediaType: MediaType.ociManifest,
      digest: D1,
      size: 0,
      urls: ['https://x'],
      platform: { os: 'linux', architecture: 'arm', variant: 'v7', 'os.version': '1' },
      artifactType: 'a/b',
    });
    expect(() => parseDescriptor('str', 'w')).toThrow('invalid descriptor in w: not an object');
  });
});

describe('checkLayers', () => {
  const base = parseManifest(json(ociManifest), undefined, 'x');
  const manifest = (base as { manifest: ImageManifest }).manifest;

  it('accepts tar, gzip and zstd layers', () => {
    for (const t of [MediaType.ociLayer, MediaType.ociLayerGzip, MediaType.ociLayerZstd, MediaType.dockerLayerGzip, MediaType.dockerLayer]) {
      expect(() => checkLayers({ ...manifest, layers: [{ mediaType: t, digest: D2, size: 1 }] }, 'x')).not.toThrow();
    }
  });

  it.each([MediaType.dockerForeignLayerGzip, MediaType.ociLayerNondistributableGzip, MediaType.ociLayerNondistributable])(
    'refuses foreign layer %s',
    (type) => {
      const m = { ...manifest, layers: [manifest.layers[0]!, { mediaType: type, digest: D1, size: 1, urls: ['https://mcr'] }] };
      const msg = failure(() => checkLayers(m, 'win:1'), 'UNSUPPORTED');
      expect(msg).toBe(`win:1: layer 1 (${D1}) is a foreign/non-distributable layer (${type})`);
    },
  );

  it('refuses a layer of unknown media type', () => {
    const m = { ...manifest, layers: [{ mediaType: 'application/vnd.cncf.helm.chart.content.v1.tar+gzip', digest: D2, size: 1 }] };
    expect(failure(() => checkLayers(m, 'chart'), 'UNSUPPORTED')).toContain('unsupported media type "application/vnd.cncf.helm.chart.content.v1.tar+gzip"');
  });
});

describe('parseImageConfig', () => {
  const config = {
    architecture: 'arm',
    os: 'linux',
    variant: 'v7',
    config: { Cmd: ['sh'], Env: ['A=1'] },
    rootfs: { type: 'layers', diff_ids: [D1, D2] },
    history: [{ created_by: 'x' }],
    'x-unknown': { kept: true },
  };

  it('parses and keeps unknown fields', () => {
    const c = parseImageConfig(json(config), 'cfg');
    expect(c.rootfs.diff_ids).toEqual([D1, D2]);
    expect(c['x-unknown']).toEqual({ kept: true });
    expect(configPlatform(c)).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(parseImageConfig(json({ ...config, config: null }), 'cfg').config).toBeNull();
  });

  it.each<[string, unknown, string]>([
    ['no os', { ...config, os: undefined }, 'config lacks os/architecture'],
    ['no rootfs', { ...config, rootfs: undefined }, 'config lacks rootfs.diff_ids'],
    ['wrong rootfs type', { ...config, rootfs: { type: 'x', diff_ids: [] } }, 'config lacks rootfs.diff_ids'],
    ['bad diff_id', { ...config, rootfs: { type: 'layers', diff_ids: ['sha256:1'] } }, 'bad diff_id "sha256:1"'],
    ['config a string', { ...config, config: 'x' }, '"config" is not an object'],
  ])('invalid: %s', (_n, doc, why) => {
    expect(failure(() => parseImageConfig(json(doc), 'cfg'), 'INVALID_MANIFEST')).toContain(why);
  });
});

describe('media types', () => {
  it('maps layer types to compression and back', () => {
    expect(layerCompression(MediaType.ociLayerZstd)).toBe('zstd');
    expect(layerCompression(MediaType.dockerLayerGzip)).toBe('gzip');
    expect(layerCompression(MediaType.dockerLayer)).toBe('none');
    expect(layerCompression(MediaType.ociConfig)).toBeUndefined();
    for (const c of ['none', 'gzip', 'zstd'] as const) {
      for (const docker of [true, false]) expect(layerCompression(layerMediaTypeFor(c, docker))).toBe(c);
    }
    expect(layerMediaTypeFor('gzip', true)).toBe(MediaType.dockerLayerGzip);
    expect(layerMediaTypeFor('none', false)).toBe(MediaType.ociLayer);
  });
});
