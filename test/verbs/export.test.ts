import { readdirSync } from 'node:fs';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BundleDestination, bundleTargets } from '../../src/bundle/bundle-destination.js';
import type { BundleSource } from '../../src/bundle/write-bundle.js';
import { FerryError } from '../../src/errors.js';
import { withLayers, type Image, type Layer } from '../../src/oci/image.js';
import type { ProgressEvent } from '../../src/oci/progress-event.js';
import { parseReference } from '../../src/oci/reference.js';
import { copyImages } from '../../src/transfer/copy-images.js';
import { exportImages, planBundleFor, writeBundle } from '../../src/verbs/export.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { sh } from '../archive/fixtures.js';
import { layoutSources } from '../bundle/fixtures.js';

/**
 * Export is a copy like every other verb: copyImages into a BundleDestination. The engine's
 * retries, concurrency limit and abort now drive the pass that measures raw layers.
 */
let dir: string;
let layout: TestLayout;
let sources: BundleSource[];
let reference: Buffer;

beforeAll(async () => {
  dir = await makeTempDir('export-engine');
  layout = await buildTestLayout(join(dir, 'layout'));
  sources = await layoutSources(layout.dir);
  await writeBundle(sources, join(dir, 'reference.tar.zst'));
  reference = await readFile(join(dir, 'reference.tar.zst'));
});

afterAll(async () => {
  await removeDir(dir);
});

/** The sources with one layer replaced by one other (in every image that has it). */
function replacing(diffId: string, make: (layer: Layer) => Layer): BundleSource[] {
  let made: Layer | undefined;
  const swap = (image: Image): Image => withLayers(image, image.layers.map((l) => (l.diffId === diffId ? (made ??= make(l)) : l)));
  return sources.map((s) => ({ ...s, image: swap(s.image) }));
}

/** A layer whose first tar read delivers damaged bytes: the stream fails as a verifying one does. */
function damagedOnce(layer: Layer): Layer & { reads: number } {
  const out = {
    ...layer,
    reads: 0,
    tar: async (options?: { signal?: AbortSignal }): Promise<import('node:stream').Readable> => {
      out.reads += 1;
      const stream = await layer.tar(options);
      if (out.reads > 1) return stream;
      let n = 0;
      const damaged = new Transform({
        transform(chunk: Buffer, _enc, done) {
          n += chunk.length;
          done(n > 1024 ? new FerryError('DIGEST_MISMATCH', `layer ${layer.diffId}: the bytes do not hash to it`) : null, chunk);
        },
      });
      // pipe() leaves the source open when its destination fails: close the file too.
      damaged.once('close', () => stream.destroy());
      return stream.pipe(damaged);
    },
  };
  return out;
}

describe('export through the transfer engine', () => {
  it('measures a raw layer again when its first read was damaged, and writes the same bytes', async () => {
    const base = layout.images.base!.layers[0]!.diffId;
    let made: (Layer & { reads: number }) | undefined;
    const retried = replacing(base, (l) => (made = damagedOnce(l)));
    const notes: string[] = [];
    const out = join(dir, 'retried.tar.zst');
    await writeBundle(retried, out, {}, (e) => {
      if (e.kind === 'note') notes.push(e.message);
    });
    // Measured twice (the engine retried the damaged read), then written once.
    expect(made!.reads).toBe(3);
    expect(notes.some((n) => /DIGEST_MISMATCH|do not hash/.test(n) && /trying again \(2 of 3\)/.test(n))).toBe(true);
    expect((await readFile(out)).equals(reference)).toBe(true);
  });

  it('an abort while measuring leaves no file behind, and stops the other measurements', async () => {
    const target = join(dir, 'aborted-measure');
    await mkdir(target);
    const controller = new AbortController();
    const phases = new Set<string>();
    const writing = writeBundle(sources, join(target, 'b.tar.zst'), {
      jobs: 2,
      signal: controller.signal,
      onProgress: (e) => {
        phases.add(e.phase);
        if (e.phase === 'measure' && e.bytes > 0) controller.abort();
      },
    });
    await expect(writing).rejects.toThrow(/abort/i);
    expect([...phases]).toEqual(['measure']);
    expect(await readdir(target)).toEqual([]);
  });

  it('measures at most `jobs` layers at once', async () => {
    let open = 0;
    let peak = 0;
    const counted = (layer: Layer): Layer => ({
      ...layer,
      tar: async (options) => {
        const stream = await layer.tar(options);
        open += 1;
        peak = Math.max(peak, open);
        // A measurement ends when its stream does: the slot is held until then.
        await new Promise((r) => setTimeout(r, 20));
        stream.once('close', () => (open -= 1));
        return stream;
      },
    });
    const all = sources.map((s) => ({ ...s, image: withLayers(s.image, s.image.layers.map(counted)) }));
    for (const jobs of [1, 3]) {
      peak = 0;
      await planBundleFor(all, { jobs });
      expect(peak).toBeLessThanOrEqual(jobs);
    }
    expect(peak).toBeGreaterThan(1);
  });

  it('takes plain copy targets too: names are references, an unnamed image is refused', async () => {
    const targets = bundleTargets(sources).map(({ ref, images, index }) => ({ ref: ref ?? parseReference('x'), images, ...(index ? { index } : {}) }));
    const destination = new BundleDestination(join(dir, 'plain.tar.zst'));
    await copyImages(targets, destination);
    expect((await readFile(join(dir, 'plain.tar.zst'))).equals(reference)).toBe(true);
    expect(destination.summary?.files).toEqual([join(dir, 'plain.tar.zst')]);
    await expect(copyImages([{ ref: undefined, images: [sources[0]!.image] }], new BundleDestination(join(dir, 'unnamed.tar.zst')))).rejects.toThrow(/names every image/);
    expect(await readdir(dir)).not.toContain('unnamed.tar.zst');
  });

  it('keeps a name that is not a reference as it was given', async () => {
    const odd = [{ ref: '/some/Layout', image: sources[0]!.image }];
    const plan = await planBundleFor(odd);
    expect(plan.header.images.map((i) => i.ref)).toEqual(['/some/Layout']);
  });

  it('exportImages: OCI layout sources to a bundle, progress as the one ProgressEvent type', async () => {
    const events: ProgressEvent[] = [];
    const out = join(dir, 'exported.tar.zst');
    const requests = ['base', 'app', 'tools', 'multi'].map((name) => ({ text: `oci:${layout.dir}:${name}`, platforms: 'all' as const }));
    const summary = await exportImages(requests, out, {
      client: () => {
        throw new Error('no registry for OCI layout sources');
      },
      onProgress: (e) => events.push(e),
    });
    expect(summary.files).toEqual([out]);
    expect(summary.header.images).toHaveLength(5);
    const labels = events.filter((e): e is Extract<ProgressEvent, { kind: 'done' }> => e.kind === 'done').map((e) => e.label);
    expect(labels.some((l) => l.startsWith('measure layer '))).toBe(true);
    expect(labels.some((l) => l.startsWith('write layer '))).toBe(true);
    // Every item started before it advanced, and advanced by what it was done with.
    const bytes = new Map<string, number>();
    for (const e of events) {
      if (e.kind === 'start') bytes.set(e.id, 0);
      if (e.kind === 'advance') bytes.set(e.id, bytes.get(e.id)! + e.bytes);
      if (e.kind === 'done') expect(bytes.get(e.id)).toBe(e.bytes);
    }
    // A usage error comes before any work.
    const unused = (): never => {
      throw new Error('unused');
    };
    await expect(exportImages(requests, join(dir, 'bad.tar.zst'), { client: unused, level: 99 })).rejects.toThrow(/compression level 99/);
    expect(await readdir(dir)).not.toContain('bad.tar.zst');
  });

  it('images named from one compressed archive share one temporary copy of it, removed at the end', async () => {
    const archive = join(dir, 'layout.tar.gz');
    await sh(`tar -C ${layout.dir} -cf - . | gzip -c > ${archive}`);
    const temp = join(dir, 'tmpdir');
    await mkdir(temp);
    const names = ['base', 'app', 'tools', 'multi'];
    const client = (): never => {
      throw new Error('no registry for archive sources');
    };
    const copies: string[][] = [];
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = temp;
    try {
      const fromArchive = await exportImages(
        [...names.map((name) => ({ text: `oci-archive:${archive}:${name}`, platforms: 'all' as const })), { text: `oci-archive:${archive}:app`, platforms: 'all' as const }],
        join(dir, 'from-archive.tar.zst'),
        // Every source is open once the first layer is written.
        { client, onProgress: (e) => void (e.kind === 'start' && copies.length === 0 && copies.push(readdirSync(temp))) },
      );
      expect(copies).toHaveLength(1);
      expect(copies[0]!.filter((n) => n.startsWith('ferry-archive-'))).toHaveLength(1);
      expect(await readdir(temp)).toEqual([]);
      const fromLayout = await exportImages(
        names.map((name) => ({ text: `oci:${layout.dir}:${name}`, platforms: 'all' as const })),
        join(dir, 'from-layout.tar.zst'),
        { client },
      );
      expect(fromArchive.header.images.map((i) => [i.ref, i.manifestDigest])).toEqual(fromLayout.header.images.map((i) => [i.ref, i.manifestDigest]));
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
  });
});
