import { execFileSync } from 'node:child_process';
import { getHeapSpaceStatistics } from 'node:v8';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
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

/**
 * The peak heap of a process that loads a command and then does what an import of thousands of
 * images does to V8: state kept per image, and objects that live a little (streams, promises)
 * and then die in the old generation. In a process of its own: the flags are process-wide, and
 * the peak is relative to what the process already holds.
 */
function peakHeap(command: string): number {
  const commands = fileURLToPath(new URL('../../dist/cli/commands/index.js', import.meta.url));
  const script = `
    import { getHeapStatistics } from 'node:v8';
    const { loadCommands } = await import(${JSON.stringify(commands)});
    await loadCommands(${JSON.stringify(command)});
    const kept = [];
    const passing = new Array(20000);
    let peak = 0;
    for (let image = 0; image < 1600; image++) {
      for (let i = 0; i < 60; i++) kept.push({ i, s: 'kept-' + image + '-' + i });
      for (let i = 0; i < 400; i++) passing[(image * 400 + i) % passing.length] = { s: 'passing-' + image + '-' + i, n: [image, i] };
      peak = Math.max(peak, getHeapStatistics().total_heap_size);
    }
    process.stdout.write(String(peak));
  `;
  return Number(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }));
}

describe('the old generation of a bulk command', () => {
  it('is collected once it has grown by half: garbage does not pile up to V8\'s default of up to 4x', () => {
    const bulk = peakHeap('import');
    const other = peakHeap('images');
    // Measured: ~26 MB against ~48 MB (V8's own factor).
    expect(bulk).toBeLessThan(other * 0.75);
  });
});
