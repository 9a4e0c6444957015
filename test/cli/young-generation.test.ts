import { getHeapSpaceStatistics } from 'node:v8';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { loadCommands } from '../../src/cli/commands/index.js';
import { zstdCompress, zstdDecompressStreamOnThread } from '../../src/io/zstd.js';

const newSpace = (): number => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.space_size;

/** Objects that survive a few scavenges each: what makes V8 grow its young generation. */
function churn(): void {
  const keep: Array<{ i: number; s: string }> = [];
  for (let i = 0; i < 3_000_000; i++) {
    keep.push({ i, s: `x${i}` });
    if (keep.length > 200_000) keep.length = 0;
  }
}

describe('a bulk command (ferry import)', () => {
  // This file's process only (vitest forks one per file): the flag is process-wide.
  it('keeps the young generation at its first size through a decompression on the zstd thread (a Node worker starting would reset it: Node sets V8 flags again then)', async () => {
    const before = newSpace();
    await loadCommands('import');
    // A decompression on the zstd thread, as `ferry import` does.
    const out: Buffer[] = [];
    await pipeline(
      Readable.from([zstdCompress(Buffer.alloc(1 << 20, 7))]),
      zstdDecompressStreamOnThread(),
      new Writable({
        write(chunk: Buffer, _enc, done) {
          out.push(chunk);
          done();
        },
      }),
    );
    expect(Buffer.concat(out).equals(Buffer.alloc(1 << 20, 7))).toBe(true);
    churn();
    expect(newSpace()).toBeLessThanOrEqual(Math.max(before, 2 << 20));
  });
});
