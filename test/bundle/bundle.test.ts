import { createHash } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import type { Digest } from '../../src/oci/digest.js';
import { withLayers } from '../../src/oci/image.js';
import { loadExcludeSet } from '../../src/bundle/delta.js';
import { openBundleSource } from '../../src/bundle/bundle-source.js';
import { openBundleStream, readBundleHeader } from '../../src/bundle/read-bundle.js';
import { loadPrivateKey, loadPublicKey, writeKeyPair } from '../../src/bundle/sign.js';
import { verifyBundle } from '../../src/bundle/verify-bundle.js';
import { type BundleSource, type BundleSummary } from '../../src/bundle/write-bundle.js';
import { writeBundle } from '../../src/verbs/export.js';
import { APP_EXPECTATIONS, buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { drain, layoutSources, refOf, rewriteBundle, run, runFailing, sha256OfFile, tarEntries } from './fixtures.js';

let dir: string;
let layout: TestLayout;
let sources: BundleSource[];
let rawBundle: string;
let raw: BundleSummary;

function hex(d: string): string {
  return d.slice('sha256:'.length);
}

beforeAll(async () => {
  dir = await makeTempDir('bundle');
  layout = await buildTestLayout(join(dir, 'layout'));
  sources = await layoutSources(layout.dir);
  rawBundle = join(dir, 'raw.tar.zst');
  raw = await writeBundle(sources, rawBundle);
});

afterAll(async () => {
  await removeDir(dir);
});

/** Rename a tar entry in place (a name of the same length), its header checksum made again. */
function renameEntry(tar: Buffer, from: string, to: string): void {
  const entry = tarEntries(tar).find((e) => e.name === from)!;
  tar.write(to, entry.headerOffset, 'utf8');
  tar.fill(0x20, entry.headerOffset + 148, entry.headerOffset + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += tar[entry.headerOffset + i]!;
  tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, entry.headerOffset + 148, 'ascii');
}

describe('raw bundle of base, app, tools and multi (amd64 + arm64)', () => {
  it('holds one entry per image and platform, and every shared blob exactly once', async () => {
    const header = raw.header;
    expect(header.images.map((i) => `${i.ref} ${i.platform.architecture}`)).toEqual([
      `${refOf('app')} ${layout.images.app!.platform.split('/')[1]}`,
      `${refOf('base')} ${layout.images.base!.platform.split('/')[1]}`,
      `${refOf('multi')} amd64`,
      `${refOf('multi')} arm64`,
      `${refOf('tools')} ${layout.images.tools!.platform.split('/')[1]}`,
    ]);
    const { stdout } = await run('tar', ['--zstd', '-tf', rawBundle]);
    const names = stdout.trim().split('\n');
    expect(names.slice(0, 5)).toEqual(['ferry-bundle.json', 'oci-layout', 'index.json', 'blobs/', 'blobs/sha256/']);
    expect(new Set(names).size).toBe(names.length);
    // The base layer is shared by all five images, and stored once, raw, under its diffId.
    const baseDiffId = layout.images.base!.layers[0]!.diffId;
    expect(names.filter((n) => n === `blobs/sha256/${hex(baseDiffId)}`)).toHaveLength(1);
    expect(names).not.toContain(`blobs/sha256/${hex(layout.images.base!.layers[0]!.digest)}`);
    // Manifests and configs come before every layer; layers by depth (every layer 0 first).
    const kinds = header.blobs.map((b) => b.kind);
    expect(kinds.lastIndexOf('manifest')).toBeLessThan(kinds.indexOf('layer'));
    expect(kinds.lastIndexOf('config')).toBeLessThan(kinds.indexOf('layer'));
    const layers = header.blobs.filter((b) => b.kind === 'layer').map((b) => b.digest);
    expect(layers[0]).toBe(baseDiffId);
    expect(names.slice(5)).toEqual(header.blobs.map((b) => `blobs/sha256/${hex(b.digest)}`));
    expect(header.blobs.filter((b) => b.kind === 'layer').every((b) => b.encoding === 'raw' && b.mediaType === 'application/vnd.oci.image.layer.v1.tar')).toBe(true);
    expect(header.compression).toMatchObject({ algorithm: 'zstd', level: 9, windowLog: 27, longDistanceMatching: true });
    expect(header.created).toBe('2024-01-01T00:00:00.000Z');
  });

  it('keeps every original manifest and config, and records both manifest digests', async () => {
    const x = join(dir, 'x-raw');
    await mkdir(x);
    await run('tar', ['--zstd', '-xf', rawBundle, '-C', x]);
    for (const image of raw.header.images) {
      const original = await readFile(join(x, 'blobs/sha256', hex(image.manifestDigest)));
      expect(`sha256:${createHash('sha256').update(original).digest('hex')}`).toBe(image.manifestDigest);
      expect(image.layoutManifestDigest).not.toBe(image.manifestDigest);
      const rewritten = JSON.parse(await readFile(join(x, 'blobs/sha256', hex(image.layoutManifestDigest)), 'utf8')) as {
        config: { digest: string };
        layers: Array<{ digest: string; size: number; mediaType: string }>;
      };
      expect(rewritten.config.digest).toBe(image.configDigest);
      expect(rewritten.layers.map((l) => l.digest)).toEqual(image.layers.map((l) => l.diffId));
      for (const l of rewritten.layers) {
        expect((await stat(join(x, 'blobs/sha256', hex(l.digest)))).size).toBe(l.size);
      }
    }
    const expectedManifests = new Set(Object.values(layout.images).map((i) => i.manifestDigest));
    expect(new Set(raw.header.images.map((i) => i.manifestDigest))).toEqual(expectedManifests);
  });

  it('extracts with tar --zstd into a layout skopeo inspects and umoci unpacks, whiteouts intact', async () => {
    const x = join(dir, 'x-tools');
    await mkdir(x);
    await run('tar', ['--zstd', '-xf', rawBundle, '-C', x]);
    const oneImageLayout = async (image: (typeof raw.header.images)[number]): Promise<string> => {
      // umoci refuses a name that two index entries share (multi's platforms): give it a layout
      // whose index.json holds only this platform's entry. The blobs are the bundle's own.
      const index = JSON.parse(await readFile(join(x, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
      const only = { ...index, manifests: index.manifests.filter((m) => m.digest === image.layoutManifestDigest) };
      await writeFile(join(x, 'index.json'), JSON.stringify(only));
      return x;
    };
    const originalIndex = await readFile(join(x, 'index.json'));
    for (const [i, image] of raw.header.images.entries()) {
      await writeFile(join(x, 'index.json'), originalIndex);
      const inspect = JSON.parse((await run('skopeo', ['inspect', `oci:${x}:${image.ref}`])).stdout) as { Digest: string; Layers: string[]; Architecture: string };
      const first = raw.header.images.find((m) => m.ref === image.ref)!;
      // skopeo takes the first entry of a name: for multi that is amd64.
      expect(inspect.Digest).toBe(first.layoutManifestDigest);
      expect(inspect.Layers).toEqual(first.layers.map((l) => l.diffId));
      await oneImageLayout(image);
      const rootfsDir = join(dir, `unpacked-${i}`);
      await run('umoci', ['unpack', '--rootless', '--image', `${x}:${image.ref}`, rootfsDir]);
      const rootfs = join(rootfsDir, 'rootfs');
      expect((await lstat(join(rootfs, 'bin/busybox'))).isFile()).toBe(true);
      if (image.ref === refOf('app')) {
        for (const p of APP_EXPECTATIONS.present) expect((await lstat(join(rootfs, p))).isFile() || (await lstat(join(rootfs, p))).isSymbolicLink()).toBe(true);
        for (const p of APP_EXPECTATIONS.absent) await expect(lstat(join(rootfs, p))).rejects.toThrow(/ENOENT/);
        expect(await readdir(join(rootfs, 'data/old'))).toEqual(['new.txt']);
        expect(await readFile(join(rootfs, 'etc/app/app.conf'), 'utf8')).toBe(APP_EXPECTATIONS.appConf);
      }
      if (image.ref === refOf('multi') && image.platform.architecture === 'arm64') {
        expect(await readFile(join(rootfs, 'etc/arch'), 'utf8')).toBe('arm64\n');
      }
      if (image.ref === refOf('tools')) expect(await readFile(join(rootfs, 'etc/tools.conf'), 'utf8')).toBe('tools=1\n');
    }
  });

  it('is byte-identical when written again (and with the sources in another order)', async () => {
    const again = join(dir, 'again.tar.zst');
    await writeBundle([...sources].reverse(), again);
    expect(await sha256OfFile(again)).toBe(await sha256OfFile(rawBundle));
    const oneWorker = join(dir, 'one-worker.tar.zst');
    await writeBundle(sources, oneWorker, { workers: 1 });
    expect(await sha256OfFile(oneWorker)).toBe(await sha256OfFile(rawBundle));
  });

  it('is read in one pass: the header, then every blob verified', async () => {
    const seen: Digest[] = [];
    let header = 0;
    for await (const event of openBundleStream(rawBundle)) {
      if (event.type === 'header') {
        header += 1;
        expect(event.header.images).toHaveLength(5);
        expect(event.signature).toBeUndefined();
        continue;
      }
      const bytes = await drain(event.stream);
      expect(bytes.length).toBe(event.size);
      expect(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).toBe(event.digest);
      seen.push(event.digest);
    }
    expect(header).toBe(1);
    expect(seen).toEqual(raw.header.blobs.map((b) => b.digest));
  });

  it('as a source, keeps its manifests and configs in a file when given one: the same bytes, the file gone at close', async () => {
    const inMemory = await openBundleSource(rawBundle);
    const documents = join(dir, 'documents');
    const inFile = await openBundleSource(rawBundle, { documents });
    try {
      // Written as they passed: every image's manifest and config, each once.
      const listed = new Set(raw.header.images.flatMap((i) => [i.manifestDigest, i.configDigest]));
      const sizes = raw.header.blobs.filter((b) => listed.has(b.digest)).reduce((sum, b) => sum + b.size, 0);
      expect((await stat(documents)).size).toBe(sizes);
      expect(inFile.targets.map((t) => t.ref)).toEqual(inMemory.targets.map((t) => t.ref));
      for (const [i, target] of inFile.targets.entries()) {
        const [image] = target.images;
        const [kept] = inMemory.targets[i]!.images;
        expect(image!.rawManifest.equals(kept!.rawManifest)).toBe(true);
        expect(image!.rawConfig.equals(kept!.rawConfig)).toBe(true);
        expect(createHash('sha256').update(image!.rawConfig).digest('hex')).toBe(hex(image!.configDigest));
        expect(image!.config).toEqual(kept!.config);
      }
    } finally {
      await inFile.close();
      await inMemory.close();
    }
    await expect(stat(documents)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('as a source that fails at its open, leaves no documents file behind', async () => {
    const documents = join(dir, 'documents-failed');
    await expect(openBundleSource(rawBundle, { documents, platforms: [{ os: 'plan9', architecture: 'mips' }] })).rejects.toMatchObject({ code: 'PLATFORM_NOT_FOUND' });
    await expect(stat(documents)).rejects.toMatchObject({ code: 'ENOENT' });
    const damaged = join(dir, 'no-config.tar.zst');
    const config = raw.header.images[0]!.configDigest;
    await rewriteBundle(rawBundle, damaged, (tar) => renameEntry(tar, `blobs/sha256/${hex(config)}`, `blobs/sha256/${hex(config).slice(0, -1)}0`));
    await expect(openBundleSource(damaged, { documents })).rejects.toMatchObject({ code: 'BUNDLE_INVALID' });
    await expect(stat(documents)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('as a source, refuses an image whose config digest names a manifest of the bundle', async () => {
    const [image] = raw.header.images;
    const swapped = join(dir, 'config-is-manifest.tar.zst');
    await rewriteBundle(rawBundle, swapped, (tar) => {
      // The same length: the header's entry stays well formed, only the config digest changes.
      const at = tar.indexOf(`"configDigest": "${image!.configDigest}"`);
      expect(at).toBeGreaterThan(0);
      tar.write(`"configDigest": "${image!.manifestDigest}"`, at, 'utf8');
    });
    for (const documents of [undefined, join(dir, 'documents-swapped')]) {
      await expect(openBundleSource(swapped, documents === undefined ? {} : { documents })).rejects.toMatchObject({
        code: 'BUNDLE_INVALID',
        message: expect.stringContaining(`its config ${image!.manifestDigest} is not in the bundle`),
      });
    }
  });

  it('skips blobs the consumer leaves untouched or abandons midway', async () => {
    let blobs = 0;
    const untouched: Readable[] = [];
    for await (const event of openBundleStream(rawBundle)) {
      if (event.type !== 'blob') continue;
      blobs += 1;
      untouched.push(event.stream);
    }
    expect(blobs).toBe(raw.header.blobs.length);
    // Left behind, they never read the tar later.
    expect(untouched.every((s) => s.destroyed)).toBe(true);

    const read: string[] = [];
    for await (const event of openBundleStream(rawBundle)) {
      if (event.type !== 'blob') continue;
      if (event.size > 100_000) {
        // Take one chunk of the big base layer, then drop it.
        for await (const chunk of event.stream) {
          expect((chunk as Buffer).length).toBeGreaterThan(0);
          break;
        }
        continue;
      }
      const bytes = await drain(event.stream);
      expect(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).toBe(event.digest);
      read.push(event.digest);
    }
    expect(read).toEqual(raw.header.blobs.filter((b) => b.size <= 100_000).map((b) => b.digest));
  });

  it('streams to a Writable (stdout) and is read back from a Readable (stdin), same bytes', async () => {
    const parts: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        parts.push(chunk);
        done();
      },
    });
    const summary = await writeBundle(sources, sink);
    const bytes = Buffer.concat(parts);
    expect(summary.files).toEqual([]);
    expect(bytes.equals(await readFile(rawBundle))).toBe(true);
    let blobs = 0;
    for await (const event of openBundleStream(Readable.from([bytes.subarray(0, 3), bytes.subarray(3)]))) {
      if (event.type === 'blob') {
        await drain(event.stream);
        blobs += 1;
      }
    }
    expect(blobs).toBe(raw.header.blobs.length);
  });

  it('reports progress: each raw layer measured once, each blob written once', async () => {
    const measured = new Set<string>();
    const written: string[] = [];
    await writeBundle(sources, new Writable({ write: (_c, _e, done) => done() }), {
      onProgress: (e) => {
        if (e.phase === 'measure' && e.done) measured.add(e.digest);
        if (e.phase === 'write' && e.done) written.push(e.digest);
      },
    });
    const layers = raw.header.blobs.filter((b) => b.kind === 'layer').map((b) => b.digest);
    expect([...measured].sort()).toEqual([...layers].sort());
    expect(written).toEqual(layers);
  });

  it('an aborted write leaves no file behind', async () => {
    const controller = new AbortController();
    const target = join(dir, 'aborted', 'b.tar.zst');
    await mkdir(join(dir, 'aborted'));
    const writing = writeBundle(sources, target, {
      signal: controller.signal,
      onProgress: (e) => {
        if (e.phase === 'write') controller.abort();
      },
    });
    await expect(writing).rejects.toThrow(/abort/i);
    expect(await readdir(join(dir, 'aborted'))).toEqual([]);
  });

  it('a source that fails midway (measuring or writing) leaves no file behind', async () => {
    const image = sources.find((s) => s.ref === refOf('app'))!.image;
    const broken = image.layers[1]!;
    for (const [i, tarSize] of [11264, undefined].entries()) {
      const layer = {
        ...broken,
        tar: async () => {
          const stream = await broken.tar();
          let n = 0;
          return stream.pipe(
            new Transform({
              transform(chunk: Buffer, _enc, done) {
                n += chunk.length;
                done(n > 4096 ? new Error('connection reset') : null, chunk);
              },
            }),
          );
        },
      };
      const failing: BundleSource = { ref: refOf('app'), image: withLayers(image, [image.layers[0]!, tarSize === undefined ? layer : { ...layer, tarSize }]) };
      const target = join(dir, `failed-${i}`, 'b.tar.zst');
      await mkdir(join(dir, `failed-${i}`));
      await expect(writeBundle([failing], target)).rejects.toThrow(/connection reset/);
      expect(await readdir(join(dir, `failed-${i}`))).toEqual([]);
    }
  });

  it('a source that fails before the file has even opened leaves no file behind', async () => {
    const image = sources.find((s) => s.ref === refOf('app'))!.image;
    const broken = image.layers[0]!;
    const layer = { ...broken, tar: () => Promise.reject(new Error('connection reset at once')), blob: () => Promise.reject(new Error('connection reset at once')) };
    const failing: BundleSource = { ref: refOf('app'), image: withLayers(image, [layer, image.layers[1]!]) };
    const target = join(dir, 'failed-at-once', 'b.tar.zst');
    await mkdir(join(dir, 'failed-at-once'));
    await expect(writeBundle([failing], target)).rejects.toThrow(/connection reset at once/);
    expect(await readdir(join(dir, 'failed-at-once'))).toEqual([]);
  });

  it('a bundle file that cannot be created fails with IO_ERROR naming it', async () => {
    const target = join(dir, 'no-such-dir', 'b.tar.zst');
    const err = await writeBundle(sources, target).catch((e: unknown) => e);
    expect(isFerryError(err, 'IO_ERROR')).toBe(true);
    expect((err as Error).message).toContain(`write bundle ${target}: `);
  });

  it('verifies', async () => {
    const report = await verifyBundle(rawBundle);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.blobsVerified).toBe(raw.header.blobs.length);
    expect(report.signature).toBe('unsigned');
  });

  it('detects a corrupted blob: the stream of that blob fails naming its digest', async () => {
    const bad = join(dir, 'corrupt.tar.zst');
    const victim = raw.header.blobs.find((b) => b.kind === 'layer')!;
    await rewriteBundle(rawBundle, bad, (tar) => {
      const entry = tarEntries(tar).find((e) => e.name === `blobs/sha256/${hex(victim.digest)}`)!;
      tar[entry.dataOffset + 1000] = tar[entry.dataOffset + 1000]! ^ 0x01;
    });
    let failure: unknown;
    for await (const event of openBundleStream(bad)) {
      if (event.type !== 'blob') continue;
      try {
        await drain(event.stream);
      } catch (err) {
        failure = err;
        expect(event.digest).toBe(victim.digest);
      }
    }
    expect(isFerryError(failure, 'DIGEST_MISMATCH')).toBe(true);
    expect((failure as Error).message).toContain(victim.digest);
    const report = await verifyBundle(bad);
    expect(report.ok).toBe(false);
    expect(report.problems.join('\n')).toContain(victim.digest);
  });

  it('hands a small blob over whole, verified, and refuses a second read of it', async () => {
    const victim = raw.header.blobs.find((b) => b.kind === 'config')!;
    const bad = join(dir, 'corrupt-config.tar.zst');
    await rewriteBundle(rawBundle, bad, (tar) => {
      const entry = tarEntries(tar).find((e) => e.name === `blobs/sha256/${hex(victim.digest)}`)!;
      tar[entry.dataOffset + 10] = tar[entry.dataOffset + 10]! ^ 0x01;
    });
    for (const [bundle, damaged] of [[rawBundle, false], [bad, true]] as const) {
      let outcome: unknown;
      for await (const event of openBundleStream(bundle)) {
        if (event.type !== 'blob' || event.digest !== victim.digest) continue;
        outcome = await event.bytes(1 << 20).catch((err: unknown) => err);
        expect(() => event.stream).toThrow(/read twice/);
        break;
      }
      if (damaged) {
        expect(isFerryError(outcome, 'DIGEST_MISMATCH')).toBe(true);
        expect((outcome as Error).message).toContain(`blob ${victim.digest} is damaged`);
      } else {
        expect(Buffer.isBuffer(outcome)).toBe(true);
        expect(`sha256:${createHash('sha256').update(outcome as Buffer).digest('hex')}`).toBe(victim.digest);
      }
    }
  });

  it('refuses a blob that ferry-bundle.json does not list', async () => {
    const bad = join(dir, 'renamed.tar.zst');
    const victim = raw.header.blobs.find((b) => b.kind === 'config')!;
    // Renamed to another digest.
    await rewriteBundle(rawBundle, bad, (tar) => renameEntry(tar, `blobs/sha256/${hex(victim.digest)}`, `blobs/sha256/${'0'.repeat(64)}`));
    const report = await verifyBundle(bad);
    expect(report.ok).toBe(false);
    expect(report.problems.join('\n')).toMatch(/is not listed in ferry-bundle.json/);
  });

  it('refuses a blob that appears twice', async () => {
    const bad = join(dir, 'twice.tar.zst');
    // The header lists blobs in the tar's order: the entry after `first` is renamed to it.
    const at = raw.header.blobs.findIndex((b) => b.kind === 'config');
    const [first, victim] = [raw.header.blobs[at - 1]!, raw.header.blobs[at]!];
    await rewriteBundle(rawBundle, bad, (tar) => renameEntry(tar, `blobs/sha256/${hex(victim.digest)}`, `blobs/sha256/${hex(first.digest)}`));
    const report = await verifyBundle(bad);
    expect(report.ok).toBe(false);
    expect(report.problems.join('\n')).toContain(`blob ${first.digest} appears twice`);
  });
});

describe('as-pulled bundle', () => {
  it('keeps registry blobs byte for byte and the original manifest digests', async () => {
    const bundle = join(dir, 'pulled.tar.zst');
    const summary = await writeBundle(sources, bundle, { layers: 'as-pulled', level: 3 });
    expect(summary.header.layers).toBe('as-pulled');
    const x = join(dir, 'x-pulled');
    await mkdir(x);
    await run('tar', ['--zstd', '-xf', bundle, '-C', x]);
    for (const image of summary.header.images) {
      expect(image.layoutManifestDigest).toBe(image.manifestDigest);
      for (const d of [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.digest)]) {
        const ours = await readFile(join(x, 'blobs/sha256', hex(d)));
        expect(ours.equals(await readFile(join(layout.dir, 'blobs/sha256', hex(d))))).toBe(true);
      }
    }
    const inspect = JSON.parse((await run('skopeo', ['inspect', `oci:${x}:${refOf('app')}`])).stdout) as { Digest: string; Layers: string[] };
    expect(inspect.Digest).toBe(layout.images.app!.manifestDigest);
    expect(inspect.Layers).toEqual(layout.images.app!.layers.map((l) => l.digest));
    const report = await verifyBundle(bundle);
    expect(report.problems).toEqual([]);
  });
});

describe('window', () => {
  it('over 2^27: plain tar --zstd refuses it, zstd --long=N and ferry read it', async () => {
    const bundle = join(dir, 'w30.tar.zst');
    const summary = await writeBundle(sources.filter((s) => s.ref === refOf('tools')), bundle, { windowLog: 30 });
    expect(summary.header.compression).toMatchObject({ windowLog: 30, decodeMemory: 2 ** 30 + 256 * 1024 });
    const plain = await runFailing('tar', ['--zstd', '-tf', bundle]);
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toMatch(/--long=30/);
    const { stdout } = await run('sh', ['-c', `zstd -dc --long=30 '${bundle}' | tar -tf - | head -1`]);
    expect(stdout.trim()).toBe('ferry-bundle.json');
    expect((await verifyBundle(bundle)).problems).toEqual([]);
  });

  it('window bomb: a frame declaring a larger window than ferry-bundle.json records is refused after the header, before any blob', async () => {
    // A real bundle written with the default window (2^27), recompressed with a 2^30 window.
    const bundle = join(dir, 'w27.tar.zst');
    await writeBundle(sources.filter((s) => s.ref === refOf('base')), bundle);
    const forged = join(dir, 'w27-as-30.tar.zst');
    await run('sh', ['-c', `zstd -dc '${bundle}' | zstd -q --long=30 -c > '${forged}'`]);
    const blobs: string[] = [];
    const read = async (): Promise<void> => {
      for await (const event of openBundleStream(forged)) if (event.type === 'blob') blobs.push(event.digest);
    };
    const err = await read().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BUNDLE_INVALID', message: expect.stringMatching(/w27-as-30\.tar\.zst: its zstd frame declares a window of 2\^30 bytes, but ferry-bundle\.json records window log 27/) });
    expect(blobs).toEqual([]);
  });
});

describe('delta bundles', () => {
  it('leave out what an old bundle holds and list it in requires', async () => {
    const old = join(dir, 'old-base.tar.zst');
    await writeBundle(sources.filter((s) => s.ref === refOf('base')), old);
    const exclude = await loadExcludeSet(old);
    const delta = join(dir, 'delta.tar.zst');
    const app = sources.filter((s) => s.ref === refOf('app') || s.ref === refOf('tools'));
    const summary = await writeBundle(app, delta, { exclude });
    const base = layout.images.base!.layers[0]!;
    const { stdout } = await run('tar', ['--zstd', '-tf', delta]);
    expect(stdout).not.toContain(hex(base.diffId));
    expect(stdout).not.toContain(hex(base.digest));
    expect(summary.header.blobs.map((b) => b.digest)).not.toContain(base.diffId);
    expect(summary.header.requires).toEqual([{ digest: base.digest, diffId: base.diffId, size: base.size, mediaType: base.mediaType }]);
    expect(summary.header.totals.requiredBytes).toBe(base.size);
    // The app layer still travels.
    expect(stdout).toContain(hex(layout.images.app!.layers[1]!.diffId));
    const report = await verifyBundle(delta);
    expect(report.problems).toEqual([]);
  });

  it('leave out what an inventory lists (by compressed digest, matched to the raw layer)', async () => {
    const inventory = join(dir, 'inventory.json');
    const base = layout.images.base!.layers[0]!;
    await writeFile(inventory, JSON.stringify({ blobs: [base.digest], images: [] }));
    const exclude = await loadExcludeSet(inventory);
    const delta = join(dir, 'delta-inventory.tar.zst');
    const summary = await writeBundle(sources.filter((s) => s.ref === refOf('tools')), delta, { exclude });
    const { stdout } = await run('tar', ['--zstd', '-tf', delta]);
    expect(stdout).not.toContain(hex(base.diffId));
    expect(summary.header.requires.map((r) => r.diffId)).toEqual([base.diffId]);
    // The rewritten manifest still describes the left-out layer exactly (size known from the
    // layer itself).
    expect(summary.header.images[0]!.layers[0]!.tarSize).toBe(raw.header.blobs.find((b) => b.digest === base.diffId)!.size);
  });
});

describe('signed bundles', () => {
  it('verify with the public key; an altered ferry-bundle.json or another key does not', async () => {
    const keys = await writeKeyPair(join(dir, 'signer'));
    expect((await stat(keys.privateKey)).mode & 0o777).toBe(0o600);
    const signed = join(dir, 'signed.tar.zst');
    await writeBundle(sources, signed, { signKey: await loadPrivateKey(keys.privateKey) });
    const pub = await loadPublicKey(keys.publicKey);

    const info = await readBundleHeader(signed, { publicKey: pub });
    expect(info.signatureVerified).toBe(true);
    expect(info.signature).toHaveLength(64);
    expect((await verifyBundle(signed, { publicKey: pub })).signature).toBe('verified');
    const { stdout } = await run('tar', ['--zstd', '-tf', signed]);
    expect(stdout.split('\n').slice(0, 2)).toEqual(['ferry-bundle.json', 'ferry-bundle.sig']);

    // OpenSSL checks the same signature over the same bytes.
    const x = join(dir, 'x-signed');
    await mkdir(x);
    await run('tar', ['--zstd', '-xf', signed, '-C', x, 'ferry-bundle.json', 'ferry-bundle.sig']);
    await run('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', keys.publicKey, '-rawin', '-in', join(x, 'ferry-bundle.json'), '-sigfile', join(x, 'ferry-bundle.sig')]);

    // Altered: one character of the header changed, same length, recompressed.
    const altered = join(dir, 'altered.tar.zst');
    await rewriteBundle(signed, altered, (tar) => {
      const entry = tarEntries(tar).find((e) => e.name === 'ferry-bundle.json')!;
      const text = tar.subarray(entry.dataOffset, entry.dataOffset + entry.size).toString('utf8');
      const at = text.indexOf(refOf('app'));
      tar.write('X', entry.dataOffset + at + 'registry.example:5000/test/'.length, 'utf8');
    });
    const events = openBundleStream(altered, { publicKey: pub });
    await expect(events.next()).rejects.toSatisfy((err: unknown) => isFerryError(err, 'SIGNATURE_INVALID'));
    const report = await verifyBundle(altered, { publicKey: pub });
    expect(report.ok).toBe(false);
    expect(report.signature).toBe('invalid');

    // Unsigned, or signed with another key: refused before any blob.
    await expect(openBundleStream(rawBundle, { publicKey: pub }).next()).rejects.toThrow(/is not signed/);
    const other = await writeKeyPair(join(dir, 'other'));
    await expect(readBundleHeader(signed, { publicKey: await loadPublicKey(other.publicKey) })).rejects.toThrow(/signature does not match/);
  });
});
