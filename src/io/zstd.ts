import { createRequire } from 'node:module';
import { Transform, type TransformCallback } from 'node:stream';
import { CompressStream } from 'zstd-napi';
import type * as ZstdBinding from 'zstd-napi/binding.js';

// The low-level binding (a CommonJS addon loader without static exports) for the decompressor below.
const binding = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBinding;

/**
 * The only zstd binding of ferry (Node 20 has no zstd in node:zlib), so the choice can change
 * in one place.
 */
export interface ZstdOptions {
  /** 1..22 */
  level?: number;
  /** log2 of the match window; above 27 plain `zstd -d`/`tar --zstd` need --long=N. */
  windowLog?: number;
  /** Long-distance matching: finds repeats across the whole window (identical files in different layers). */
  long?: boolean;
  /** Worker threads; 0 compresses on the calling thread. */
  workers?: number;
}

export const ZSTD_MAX_LEVEL = 22;

export function zstdCompressStream(options: ZstdOptions = {}): Transform {
  const params: ConstructorParameters<typeof CompressStream>[0] = {
    compressionLevel: options.level ?? 3,
    enableLongDistanceMatching: options.long ?? false,
    nbWorkers: options.workers ?? 0,
    checksumFlag: true,
  };
  if (options.windowLog !== undefined) params.windowLog = options.windowLog;
  return new CompressStream(params);
}

/**
 * Streaming decompression that honours backpressure inside one input chunk. zstd-napi's
 * DecompressStream pushes all the output of a chunk at once; with long-distance matching a 64 KiB
 * chunk can stand for tens of MB (a rebuilt layer that repeats an earlier one), which piled up
 * ~90 MB of buffers in `ferry import`. Here output goes out one block-sized buffer at a time and
 * the rest of the chunk waits until the reader wants more.
 */
class ZstdDecompressStream extends Transform {
  private readonly dctx = new binding.DCtx();
  private readonly outSize = binding.dStreamOutSize();
  private out: Buffer | undefined;
  private inFrame = false;
  /** The chunk being decompressed and its callback, while the reader is full. */
  private src: Buffer | undefined;
  private done: TransformCallback | undefined;
  private pumping = false;
  /** The reader asked for more and nothing was pushed since (push() can call _read synchronously). */
  private readRequested = false;

  constructor(windowLogMax: number) {
    super({ readableHighWaterMark: binding.dStreamOutSize() });
    this.dctx.setParameter(binding.DParameter.windowLogMax, windowLogMax);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.src = chunk;
    this.done = done;
    this.pump();
  }

  override _read(size: number): void {
    if (this.done === undefined) {
      super._read(size);
      return;
    }
    // Owed until something is pushed: if this chunk ends without output, Transform must still
    // be told (below), or the parked write callback and the reader wait for each other.
    this.readRequested = true;
    if (!this.pumping) this.pump();
  }

  override _flush(done: TransformCallback): void {
    done(this.inFrame ? new Error('Stream ended in middle of compressed data frame') : null);
  }

  private pump(): void {
    const done = this.done!;
    let finished = false;
    let failure: unknown;
    this.pumping = true;
    try {
      for (;;) {
        // A fresh buffer only once the last one was handed on (tiny input chunks often produce nothing).
        const out = (this.out ??= Buffer.allocUnsafe(this.outSize));
        const [ret, produced, consumed] = this.dctx.decompressStream(out, this.src!);
        this.src = this.src!.subarray(consumed);
        let room = true;
        if (produced > 0) {
          this.out = undefined;
          this.readRequested = false;
          room = this.push(out.subarray(0, produced));
        }
        if (this.src.length === 0 && (produced < out.length || ret === 0)) {
          this.inFrame = ret !== 0;
          finished = true;
          break;
        }
        if (!room && !this.readRequested) break; // _read resumes
      }
    } catch (err) {
      failure = err;
    }
    this.pumping = false;
    if (failure === undefined && !finished) return;
    this.src = this.done = undefined;
    const wanted = this.readRequested;
    this.readRequested = false;
    if (failure !== undefined) {
      done(failure as Error);
      return;
    }
    done();
    // A read still owed would never be asked again (Readable waits for a push): let Transform
    // release the write callback it may have parked, so the next chunk comes.
    if (wanted) super._read(this.readableHighWaterMark);
  }
}

/** `windowLogMax` lets ferry read its own bundles written with a window above zstd's default limit (27). */
export function zstdDecompressStream(windowLogMax = 31): Transform {
  return new ZstdDecompressStream(windowLogMax);
}

/** Memory a decoder needs for a frame of this window: the window itself plus small buffers. */
export function zstdDecodeMemory(windowLog: number): number {
  return 2 ** windowLog + 2 * 128 * 1024;
}

/** The zstd frame magic, for telling a .zst stream from a plain tar. */
export const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
