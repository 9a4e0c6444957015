import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openOciLayout } from '../../src/archive/index.js';
import { type BundleSource } from '../../src/bundle/write-bundle.js';
import { writeBundle } from '../../src/verbs/export.js';
import { buildTestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { refOf } from './fixtures.js';

const MiB = 1024 * 1024;
let dir: string;
let sources: BundleSource[];

beforeAll(async () => {
  dir = await makeTempDir('bundle-memory');
  const layout = await buildTestLayout(join(dir, 'layout'), { bigLayerBytes: 256 * MiB });
  sources = (await openOciLayout(layout.dir, 'big')).images.map((image) => ({ ref: refOf('big'), image }));
});

afterAll(async () => {
  await removeDir(dir);
});

// zstd's own memory is bounded by its window (and workers); with a small window and no worker
// threads, what is left is ferry's streaming: RSS must stay flat however large the layer.
it('writes a 256 MiB layer in constant memory (measure pass and write pass)', async () => {
  const samples: number[] = [];
  let events = 0;
  const summary = await writeBundle(sources, join(dir, 'big.tar.zst'), {
    level: 1,
    windowLog: 20,
    workers: 0,
    onProgress: (e) => {
      if (e.kind === 'layer' && events++ % 64 === 0) samples.push(process.memoryUsage().rss);
    },
  });
  expect(summary.header.totals.layerBytes).toBeGreaterThan(256 * MiB);
  expect(samples.length).toBeGreaterThan(50);
  const start = samples[Math.floor(samples.length / 10)]!;
  const peak = Math.max(...samples);
  expect((peak - start) / MiB).toBeLessThan(48);
});
