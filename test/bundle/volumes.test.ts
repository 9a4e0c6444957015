import { copyFile, open, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { openBundleStream, readBundleHeader } from '../../src/bundle/read-bundle.js';
import { verifyBundle } from '../../src/bundle/verify-bundle.js';
import { type BundleSource, type BundleSummary } from '../../src/bundle/write-bundle.js';
import { writeBundle } from '../../src/verbs/export.js';
import { openOciLayout } from '../../src/archive/index.js';
import { buildTestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { drain, refOf, run, runFailing, sha256OfFile } from './fixtures.js';

const MiB = 1024 * 1024;
let dir: string;
let sources: BundleSource[];
let base: string;
let summary: BundleSummary;

beforeAll(async () => {
  dir = await makeTempDir('bundle-volumes');
  const layout = await buildTestLayout(join(dir, 'layout'), { bigLayerBytes: 64 * MiB });
  sources = (await openOciLayout(layout.dir, 'big')).images.map((image) => ({ ref: refOf('big'), image }));
  base = join(dir, 'out', 'big.tar.zst');
  await run('mkdir', ['-p', join(dir, 'out')]);
  summary = await writeBundle(sources, { path: base, split: 16 * MiB }, { level: 3 });
});

afterAll(async () => {
  await removeDir(dir);
});

async function copyVolumes(to: string): Promise<string> {
  await run('mkdir', ['-p', to]);
  for (const f of await readdir(join(dir, 'out'))) await copyFile(join(dir, 'out', f), join(to, f));
  return join(to, 'big.tar.zst');
}

describe('volumes (--split 16M of an image with a 64 MiB layer)', () => {
  it('are at most 16 MiB each, with a .sha256 file that sha256sum -c accepts', async () => {
    const files = (await readdir(join(dir, 'out'))).sort();
    expect(files).toEqual(['big.tar.zst.001', 'big.tar.zst.002', 'big.tar.zst.003', 'big.tar.zst.004', 'big.tar.zst.005', 'big.tar.zst.sha256']);
    for (const f of files.filter((n) => /\.\d{3}$/.test(n))) {
      const size = (await stat(join(dir, 'out', f))).size;
      expect(size).toBeLessThanOrEqual(16 * MiB);
    }
    expect((await stat(join(dir, 'out', 'big.tar.zst.004'))).size).toBe(16 * MiB);
    expect(summary.volumes!.map((v) => v.size).reduce((a, b) => a + b, 0)).toBe(summary.bytes);
    const { stdout } = await run('sha256sum', ['-c', 'big.tar.zst.sha256'], { cwd: join(dir, 'out') });
    expect(stdout.trim().split('\n')).toHaveLength(5);
    // The hashes were computed while writing; they match what is on disk.
    for (const v of summary.volumes!) expect(await sha256OfFile(v.path)).toBe(v.sha256);
    // Concatenated, the volumes are the one zstd stream plain tools read.
    const cat = await run('sh', ['-c', 'cat big.tar.zst.0* | zstd -dc | tar -tf - | head -3'], { cwd: join(dir, 'out') });
    expect(cat.stdout.split('\n')[0]).toBe('ferry-bundle.json');
  });

  it('are found from the base name or from the first volume, and read in one pass', async () => {
    for (const input of [base, `${base}.001`]) {
      const info = await readBundleHeader(input);
      expect(info.location?.kind).toBe('volumes');
      expect(info.compressedSize).toBe(summary.bytes);
      let bytes = 0;
      for await (const event of openBundleStream(input)) if (event.type === 'blob') bytes += (await drain(event.stream)).length;
      expect(bytes).toBe(summary.header.totals.blobBytes);
    }
    expect((await verifyBundle(base)).problems).toEqual([]);
  });

  it('a byte flipped in volume 2 is named: verify fails, and so does the reader', async () => {
    const copy = await copyVolumes(join(dir, 'damaged'));
    const handle = await open(`${copy}.002`, 'r+');
    const at = 5 * MiB;
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, at);
    one[0] = one[0]! ^ 0x40;
    await handle.write(one, 0, 1, at);
    await handle.close();

    const report = await verifyBundle(copy);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual(['big.tar.zst.002 is damaged: copy it again']);

    let failure: unknown;
    try {
      for await (const event of openBundleStream(copy)) if (event.type === 'blob') await drain(event.stream);
    } catch (err) {
      failure = err;
    }
    expect(isFerryError(failure, 'DIGEST_MISMATCH')).toBe(true);
    expect((failure as Error).message).toBe('big.tar.zst.002 is damaged: copy it again');

    const check = await runFailing('sha256sum', ['-c', 'big.tar.zst.sha256'], { cwd: join(dir, 'damaged') });
    expect(check.code).not.toBe(0);
    expect(check.stdout).toContain('big.tar.zst.002: FAILED');
  });

  it('a missing volume is named', async () => {
    const copy = await copyVolumes(join(dir, 'missing'));
    await run('rm', [`${copy}.003`]);
    await expect(readBundleHeader(copy)).rejects.toThrow(/big\.tar\.zst\.003 is missing: volume 3 of 5/);
  });

  it('a truncated last volume without a .sha256 file still fails the read', async () => {
    const copy = await copyVolumes(join(dir, 'truncated'));
    await run('rm', [`${copy}.sha256`]);
    await run('truncate', ['-s', String(MiB), `${copy}.005`]);
    const report = await verifyBundle(copy);
    expect(report.ok).toBe(false);
    expect(report.problems.join('\n')).toMatch(/big\.tar\.zst\.sha256 is missing/);
    expect(report.problems.length).toBeGreaterThan(1);
  });

  it('rewriting with fewer volumes removes the stale ones', async () => {
    const copy = await copyVolumes(join(dir, 'rewrite'));
    await writeBundle(sources, { path: copy, split: 48 * MiB }, { level: 3 });
    expect((await readdir(join(dir, 'rewrite'))).sort()).toEqual(['big.tar.zst.001', 'big.tar.zst.002', 'big.tar.zst.sha256']);
    expect((await readFile(`${copy}.sha256`, 'utf8')).trim().split('\n')).toHaveLength(2);
  });

  it('an aborted split write leaves no volume behind', async () => {
    const target = join(dir, 'aborted');
    await run('mkdir', ['-p', target]);
    const controller = new AbortController();
    let bytes = 0;
    const writing = writeBundle(sources, { path: join(target, 'big.tar.zst'), split: 4 * MiB }, {
      level: 1,
      signal: controller.signal,
      onProgress: (e) => {
        if (e.phase === 'write' && e.kind === 'layer') {
          bytes = e.bytes;
          if (bytes > 20 * MiB) controller.abort();
        }
      },
    });
    await expect(writing).rejects.toThrow(/abort/i);
    expect(bytes).toBeGreaterThan(20 * MiB);
    expect(await readdir(target)).toEqual([]);
  });

  it('refuses volumes under 1 MiB', async () => {
    await expect(writeBundle(sources, { path: join(dir, 'tiny.tar.zst'), split: 1000 })).rejects.toThrow(/at least/);
  });
});
