import { utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { ferryOk, imageId, writeContext } from './build-helpers.js';

/**
 * The build cache: an unchanged context rebuilds all CACHED in a fraction of the time; touching a
 * file keeps its COPY cached (content, not mtime, is the key); new content rebuilds from that
 * step on; --no-cache ignores it; ferry prune removes it.
 */
let work: string;
let root: string;
let context: string;

const DOCKERFILE = `FROM base
COPY a.txt /a.txt
RUN cat /a.txt > /from-a.txt && sleep 3
COPY b.txt /b.txt
RUN cat /b.txt > /from-b.txt && sleep 3 && dd if=/dev/zero of=/zeros bs=1024 count=4096 2>/dev/null
CMD ["cat", "/from-b.txt"]
`;

beforeAll(async () => {
  work = await makeTempDir('build-cache');
  const layout = await buildTestLayout(join(work, 'layout'));
  root = join(work, 'store');
  await ferryOk(root, ['import', `oci:${layout.dir}:base`]);
  context = join(work, 'ctx');
  await writeContext(context, { Dockerfile: DOCKERFILE, 'a.txt': 'a one\n', 'b.txt': 'b one\n' });
}, 60_000);

afterAll(async () => {
  await removeDir(work);
});

function cachedCount(out: string): number {
  return out.split('\n').filter((l) => l === '--> CACHED').length;
}

/** Which steps ran (not cached): the STEP lines followed by a new layer id. */
function rebuilt(out: string): string[] {
  const lines = out.split('\n');
  return lines.flatMap((l, i) => (/^--> [0-9a-f]{12}$/.test(lines[i + 1] ?? '') ? [l.replace(/^STEP \d+\/\d+: /, '')] : []));
}

async function timed(args: string[]): Promise<{ out: string; ms: number }> {
  const start = performance.now();
  const out = await ferryOk(root, args);
  return { out, ms: performance.now() - start };
}

describe('build cache', () => {
  it('an unchanged context is all CACHED, in under 10% of the first build, and gives the same image', async () => {
    const first = await timed(['build', '-t', 'cache/app', context]);
    expect(cachedCount(first.out)).toBe(0);
    expect(rebuilt(first.out)).toHaveLength(4);
    // The first build is mostly sleep; a cached one is all CPU, which the other test files share
    // on a two-core CI machine: its cost is the fastest of three (each one all CACHED).
    const seconds: Array<{ out: string; ms: number }> = [];
    for (let i = 0; i < 3; i++) seconds.push(await timed(['build', '-t', 'cache/app', context]));
    for (const again of seconds) {
      expect(cachedCount(again.out)).toBe(4);
      expect(rebuilt(again.out)).toEqual([]);
      expect(imageId(again.out)).toBe(imageId(first.out));
    }
    const second = seconds.reduce((a, b) => (b.ms < a.ms ? b : a));
    expect(second.ms).toBeLessThan(first.ms * 0.1);
    expect(imageId(second.out)).toBe(imageId(first.out));
    expect((await ferryOk(root, ['run', '--rm', 'cache/app'])).trim()).toBe('b one');
  }, 120_000);

  it("touching a file's mtime keeps its COPY cached", async () => {
    const later = new Date(Date.now() + 3600_000);
    await utimes(join(context, 'a.txt'), later, later);
    await utimes(join(context, 'b.txt'), later, later);
    const out = await ferryOk(root, ['build', '-t', 'cache/app', context]);
    expect(cachedCount(out)).toBe(4);
  }, 60_000);

  it('new content rebuilds from that step on, and only from there', async () => {
    await writeFile(join(context, 'b.txt'), 'b two\n');
    const out = await ferryOk(root, ['build', '-t', 'cache/app', context]);
    expect(cachedCount(out)).toBe(2);
    expect(rebuilt(out)).toEqual(['COPY b.txt /b.txt', 'RUN cat /b.txt > /from-b.txt && sleep 3 && dd if=/dev/zero of=/zeros bs=1024 count=4096 2>/dev/null']);
    expect((await ferryOk(root, ['run', '--rm', 'cache/app'])).trim()).toBe('b two');
  }, 60_000);

  it('--no-cache runs every step', async () => {
    const out = await ferryOk(root, ['build', '--no-cache', '-q', '-t', 'cache/app', context]);
    expect(out.trim()).toMatch(/^sha256:[0-9a-f]{64}$/);
    const again = await ferryOk(root, ['build', '--no-cache', '-t', 'cache/app', context]);
    expect(cachedCount(again)).toBe(0);
  }, 60_000);

  it('ferry prune removes the cache with the layers only it kept', async () => {
    await ferryOk(root, ['rmi', 'cache/app']);
    await ferryOk(root, ['prune']);
    const out = await ferryOk(root, ['build', '-t', 'cache/app', context]);
    expect(cachedCount(out)).toBe(0);
  }, 60_000);
});
