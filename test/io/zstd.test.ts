import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FerryError } from '../../src/errors.js';
import { nativeFs } from '../../src/io/native.js';
import { zstdCompressStream, zstdDecompressStream, zstdDecompressStreamOnThread, zstdFrameWindowLog } from '../../src/io/zstd.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
let dir: string;
let plain: Buffer;
let compressed: Buffer;

beforeAll(async () => {
  dir = await makeTempDir('zstd');
  // 48 MiB that is one random MiB repeated: with long-distance matching the zstd CLI turns it
  // into a few KiB, so one small input chunk stands for megabytes of output (a decompression
  // "bomb" in miniature, like a rebuilt layer in a bundle).
  const block = randomBytes(1 << 20);
  plain = Buffer.concat(Array.from({ length: 48 }, () => block));
  await writeFile(join(dir, 'plain'), plain);
  await run('zstd', ['-q', '-3', '--long=27', '-o', join(dir, 'plain.zst'), join(dir, 'plain')]);
  compressed = await readFile(join(dir, 'plain.zst'));
});

afterAll(async () => {
  await removeDir(dir);
});

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

// The same contract on the calling thread and on a thread of the addon (the bundle reader's).
for (const [name, decompress] of [
  ['zstdDecompressStream', zstdDecompressStream],
  ['zstdDecompressStreamOnThread', zstdDecompressStreamOnThread],
] as const) {
describe(name, () => {
  it('gives what zstd compressed, whatever the input chunking and reader speed', async () => {
    expect(compressed.length).toBeLessThan(2 * 1024 * 1024);
    for (const piece of [999, 4096, 65536, 1 << 20]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < compressed.length; i += piece) chunks.push(compressed.subarray(i, i + piece));
      const hash = createHash('sha256');
      let n = 0;
      await pipeline(
        Readable.from(chunks),
        decompress(),
        new Writable({
          highWaterMark: 1000,
          write(chunk: Buffer, _enc, done) {
            hash.update(chunk);
            n += chunk.length;
            if (n % 3 === 0) setImmediate(done);
            else done();
          },
        }),
      );
      expect(n).toBe(plain.length);
      expect(hash.digest('hex')).toBe(sha256(plain));
    }
  });

  it('holds back the output of one small chunk until the reader wants it (memory stays flat)', async () => {
    const stream = decompress();
    let most = 0;
    let n = 0;
    await pipeline(Readable.from([compressed]), stream, async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) {
        n += chunk.length;
        // What the reader holds plus what waits in the stream (the iterator reads all that is queued).
        most = Math.max(most, stream.readableLength + chunk.length);
        await new Promise((resolve) => setImmediate(resolve));
      }
    });
    expect(n).toBe(plain.length);
    // zstd-napi's own DecompressStream queues all 48 MiB here (measured: 50331648).
    expect(most).toBeLessThanOrEqual(1024 * 1024);
  });

  it('fails a truncated stream and a damaged one', async () => {
    const drain = async (bytes: Buffer): Promise<void> => {
      await pipeline(Readable.from([bytes]), decompress(), new Writable({ write: (_c, _e, done) => done() }));
    };
    await expect(drain(compressed.subarray(0, compressed.length - 100))).rejects.toThrow(/middle of compressed data frame/);
    const damaged = Buffer.from(compressed);
    for (let i = 200; i < 600; i++) damaged[i] = damaged[i]! ^ 0x5a;
    await expect(drain(damaged)).rejects.toThrow();
  });
});

describe(`${name}: window limit`, () => {
  async function zstdOf(args: string[], input: string, name: string): Promise<Buffer> {
    const path = join(dir, name);
    await writeFile(join(dir, `${name}.in`), input);
    await run('sh', ['-c', `zstd -q ${args.join(' ')} -c < '${join(dir, `${name}.in`)}' > '${path}'`]);
    return readFile(path);
  }

  it('reads the window a frame declares: 2^30 from zstd --long=30 on a pipe, the content size for a single-segment frame', async () => {
    expect(zstdFrameWindowLog(await zstdOf(['--long=30'], 'hello', 'long30.zst'))).toBe(30);
    const small = join(dir, 'small');
    await writeFile(small, 'hello');
    await run('zstd', ['-q', '-f', small, '-o', `${small}.zst`]);
    expect(zstdFrameWindowLog(await readFile(`${small}.zst`))).toBe(10);
    expect(zstdFrameWindowLog(Buffer.from('not zstd'))).toBeUndefined();
  });

  it('window bomb: a frame declaring more than 2^27 is refused by default before any output, naming the stream; a larger limit is explicit', async () => {
    const frame = await zstdOf(['--long=30'], 'x'.repeat(1000), 'bomb.zst');
    const out: Buffer[] = [];
    const drain = (windowLogMax?: number): Promise<void> =>
      pipeline(
        Readable.from([frame]),
        decompress({ what: 'layer sha256:abc', ...(windowLogMax === undefined ? {} : { windowLogMax }) }),
        new Writable({
          write: (c: Buffer, _e, done) => {
            out.push(c);
            done();
          },
        }),
      );
    const err = await drain().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FerryError);
    expect(err).toMatchObject({ code: 'UNSUPPORTED', message: 'layer sha256:abc: zstd frame needs a 1 GiB window (2^30), over the 128 MiB (2^27) that ferry allows here' });
    expect(out).toEqual([]);
    await drain(30);
    expect(Buffer.concat(out).toString()).toBe('x'.repeat(1000));
  });
});
}

describe('zstdCompressStream', () => {
  it('writes the bytes zstd-napi writes, whatever the input chunking and reader speed, and holds back its output', async () => {
    // Random data does not compress: with two workers a job's end hands out megabytes at once.
    // Not a whole number of zstd jobs (2 MiB here): input that ends exactly at a job's end gets
    // its last block from worker timing, in zstd-napi's stream as in ours (an empty last block, 3
    // bytes, or none), so only such a size gives the same bytes every time.
    const input = Buffer.concat([randomBytes(24 << 20), plain.subarray(0, (8 << 20) + 12345)]);
    const { CompressStream } = createRequire(import.meta.url)('zstd-napi') as typeof import('zstd-napi');
    const options = { level: 3, windowLog: 20, long: true, workers: 2 };
    const collect = async (stream: Transform, piece: number, slow: boolean): Promise<{ bytes: Buffer; most: number }> => {
      const chunks: Buffer[] = [];
      for (let i = 0; i < input.length; i += piece) chunks.push(input.subarray(i, i + piece));
      const out: Buffer[] = [];
      let most = 0;
      await pipeline(Readable.from(chunks), stream, async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) {
          out.push(chunk);
          // The iterator takes all that is queued at once: a chunk is what the stream held.
          most = Math.max(most, chunk.length);
          if (slow) await new Promise((resolve) => setImmediate(resolve));
        }
      });
      return { bytes: Buffer.concat(out), most };
    };
    const theirs = await collect(
      new CompressStream({ compressionLevel: options.level, enableLongDistanceMatching: true, nbWorkers: options.workers, checksumFlag: true, windowLog: options.windowLog }),
      65536,
      true,
    );
    for (const piece of [4096, 65536, 1 << 20]) {
      const ours = await collect(zstdCompressStream(options), piece, true);
      expect(sha256(ours.bytes)).toBe(sha256(theirs.bytes));
      // A few 128 KiB output buffers (measured: 3 at most; zstd-napi's own stream: 2 MB here).
      expect(ours.most).toBeLessThanOrEqual(4 * 132 * 1024);
    }
    await writeFile(join(dir, 'ours.zst'), theirs.bytes);
    const { stdout } = await run('sh', ['-c', `zstd -q -d --long=27 -c ${join(dir, 'ours.zst')} | sha256sum`]);
    expect(stdout.split(' ')[0]).toBe(sha256(input));
  });
});

describe('zstdCompressStream jobSize', () => {
  it("hands zstd the job size: zstd-napi's bytes with the same job size, not those of zstd's own", async () => {
    // Not a whole number of 1 MiB jobs (see above); compressible, so the job boundaries show.
    const input = Buffer.concat([plain.subarray(0, (6 << 20) + 4321), randomBytes(1 << 20)]);
    const { CompressStream } = createRequire(import.meta.url)('zstd-napi') as typeof import('zstd-napi');
    const base = { level: 9, windowLog: 20, long: true, workers: 2 };
    const digest = async (stream: Transform): Promise<string> => {
      const out: Buffer[] = [];
      await pipeline(Readable.from([input]), stream, async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) out.push(chunk);
      });
      return sha256(Buffer.concat(out));
    };
    const napi = (jobSize?: number): Transform =>
      new CompressStream({
        compressionLevel: base.level,
        enableLongDistanceMatching: true,
        nbWorkers: base.workers,
        checksumFlag: true,
        windowLog: base.windowLog,
        ...(jobSize === undefined ? {} : { jobSize }),
      });
    const ours = await digest(zstdCompressStream({ ...base, jobSize: 1 << 20 }));
    expect(ours).toBe(await digest(napi(1 << 20)));
    expect(ours).not.toBe(await digest(napi()));
    expect(await digest(zstdCompressStream(base))).toBe(await digest(napi()));
  });
});

describe('zstdDecompressStreamOnThread: its thread', () => {
  const threads = (): number => nativeFs().zstdThreadsOpen();
  async function until(check: () => boolean): Promise<void> {
    for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(check()).toBe(true);
  }

  it('is stopped when the stream ends and when it is abandoned midway, so it never keeps the process alive', async () => {
    const before = threads();
    await pipeline(Readable.from([compressed]), zstdDecompressStreamOnThread(), new Writable({ write: (_c, _e, done) => done() }));
    await until(() => threads() === before);
    const stream = zstdDecompressStreamOnThread();
    stream.write(compressed.subarray(0, 64 * 1024));
    await new Promise((resolve) => stream.once('readable', resolve));
    expect(threads()).toBe(before + 1);
    stream.destroy();
    await until(() => threads() === before);
  });

  it('lets a process end by itself once its streams ended or were destroyed', async () => {
    // The built module, in a process of its own: that process must exit without being told to.
    const script = [
      `import { zstdDecompressStreamOnThread } from ${JSON.stringify(join(process.cwd(), 'dist', 'io', 'zstd.js'))};`,
      `import { readFileSync } from 'node:fs';`,
      `const bytes = readFileSync(${JSON.stringify(join(dir, 'plain.zst'))});`,
      `const whole = zstdDecompressStreamOnThread();`,
      `let n = 0; whole.on('data', (c) => { n += c.length; }); whole.on('end', () => process.stdout.write('ended ' + n + ' '));`,
      `whole.end(bytes);`,
      `const cut = zstdDecompressStreamOnThread();`,
      `cut.write(bytes.subarray(0, 64 * 1024));`,
      `cut.once('readable', () => { cut.destroy(); process.stdout.write('destroyed'); });`,
    ].join('\n');
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 });
    expect(stdout).toMatch(new RegExp(`ended ${plain.length}`));
    expect(stdout).toContain('destroyed');
  });
});
