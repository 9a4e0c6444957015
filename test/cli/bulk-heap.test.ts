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
 * What `script` (an ES module body) writes to stdout, run in a Node process of its own after it
 * loaded `command` as the CLI does: the settings a bulk command makes are process-wide.
 */
function afterLoading(command: string, script: string, nodeFlags: string[] = []): string {
  const commands = fileURLToPath(new URL('../../dist/cli/commands/index.js', import.meta.url));
  const prelude = `const { loadCommands } = await import(${JSON.stringify(commands)}); await loadCommands(${JSON.stringify(command)});`;
  return execFileSync(process.execPath, [...nodeFlags, '--input-type=module', '-e', `${prelude}\n${script}`], { encoding: 'utf8' });
}

/**
 * The peak heap of a process that loads a command and then does what an import of thousands of
 * images does to V8: state kept per image, and objects that live a little (streams, promises)
 * and then die in the old generation. In a process of its own: the flags are process-wide, and
 * the peak is relative to what the process already holds.
 */
function peakHeap(command: string): number {
  const script = `
    const { getHeapStatistics } = await import('node:v8');
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
  return Number(afterLoading(command, script));
}

describe('the old generation of a bulk command', () => {
  it('is collected once it has grown by half: garbage does not pile up to V8\'s default of up to 4x', () => {
    const bulk = peakHeap('import');
    const other = peakHeap('images');
    // Measured: ~26 MB against ~48 MB (V8's own factor).
    expect(bulk).toBeLessThan(other * 0.75);
  });
});

/**
 * How much of 40 MiB of freed 1 MiB buffers a process that loaded `command` keeps, after a
 * 24 MiB buffer came and went (glibc then raises its thresholds to 24 and 48 MiB unless they
 * are fixed). In a process of its own: mallopt is process-wide.
 */
function keptAfterFree(command: string): { held: number; kept: number } {
  const script = `
    const rss = () => process.memoryUsage().rss;
    // V8 frees an ArrayBuffer's memory on a background thread after the collection that found it dead.
    const settle = async () => { for (let k = 0; k < 5; k++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 100)); } };
    let big = Buffer.alloc(24 << 20, 1);
    big = undefined;
    await settle();
    const before = rss();
    let many = [];
    for (let i = 0; i < 40; i++) many.push(Buffer.alloc(1 << 20, 2));
    const held = rss() - before;
    many = undefined;
    await settle();
    process.stdout.write(JSON.stringify({ held: held >> 20, kept: (rss() - before) >> 20 }));
  `;
  return JSON.parse(afterLoading(command, script, ['--expose-gc'])) as { held: number; kept: number };
}

describe('the C heap of a bulk command', () => {
  it('gives freed memory back: glibc does not raise its mmap and trim thresholds after a large buffer is freed', () => {
    const bulk = keptAfterFree('import');
    const other = keptAfterFree('images');
    expect(bulk.held).toBeGreaterThanOrEqual(36);
    expect(other.held).toBeGreaterThanOrEqual(36);
    // Measured: 0 MB kept against 40 (glibc's own thresholds: trim only past 48 MiB).
    expect(bulk.kept).toBeLessThanOrEqual(8);
    expect(other.kept).toBeGreaterThanOrEqual(24);
  });
});
