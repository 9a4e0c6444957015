import { createRequire } from 'node:module';
import { Duplex, Transform, type TransformCallback } from 'node:stream';
import type * as ZstdNapi from 'zstd-napi';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { FerryError } from '../errors.js';
import { nativeFs, ZSTD_THREAD_CONSUMED, ZSTD_THREAD_ENDED, ZSTD_THREAD_ERROR, ZSTD_THREAD_OUTPUT, type NativeFs, type ZstdThreadHandle } from './native.js';

// zstd-napi (a CommonJS addon) is loaded on first use, not with this module: commands that never
// touch zstd (run, ps, images) start without dlopen-ing it. The low-level binding (an addon loader
// without static exports) drives the decompressor below.
const requireHere = createRequire(import.meta.url);
let zstdNapi: typeof ZstdNapi | undefined;
let zstdBinding: typeof ZstdBinding | undefined;
function napi(): typeof ZstdNapi {
  zstdNapi ??= requireHere('zstd-napi') as typeof ZstdNapi;
  return zstdNapi;
}
function binding(): typeof ZstdBinding {
  zstdBinding ??= requireHere('zstd-napi/binding.js') as typeof ZstdBinding;
  return zstdBinding;
}

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
  /** Bytes per worker job (zstd's ZSTD_c_jobSize); zstd sizes them itself when unset. */
  jobSize?: number;
}

export const ZSTD_MAX_LEVEL = 22;

export function zstdCompressStream(options: ZstdOptions = {}): Transform {
  return new ZstdCompressStream(options);
}

/**
 * Streaming compression that honours backpressure inside one input chunk, as the decompressor
 * below does. zstd-napi's CompressStream pushes everything a call produces, and with workers a
 * call at a job's end (or the frame's end) hands out whole jobs of output at once (8 MiB each at
 * level 9), and each push kept a fresh 128 KiB buffer however few bytes it held. Here output goes
 * out one buffer at a time as the reader wants it, small outputs copied out of the reused buffer.
 * The bytes are zstd-napi's for the same input: the calls and their input are the same, only
 * their timing differs. (With workers, as there, an input that ends exactly at a job's end gets
 * an empty last block or none by worker timing; a tar that long is a 1 in 16384 chance at level 9.)
 */
class ZstdCompressStream extends Transform {
  private readonly cctx = new (binding().CCtx)();
  private readonly outSize = binding().cStreamOutSize();
  private out: Buffer | undefined;
  /** The input being compressed and its callback (a write's, or the flush's), while the reader is full. */
  private src: Buffer | undefined;
  private ending = false;
  private done: TransformCallback | undefined;
  private pumping = false;
  /** The reader asked for more and nothing was pushed since. */
  private readRequested = false;

  constructor(options: ZstdOptions) {
    super({ readableHighWaterMark: binding().cStreamOutSize() });
    const { CParameter } = binding();
    // The order zstd-napi set them in.
    this.cctx.setParameter(CParameter.compressionLevel, options.level ?? 3);
    this.cctx.setParameter(CParameter.enableLongDistanceMatching, options.long === true ? 1 : 0);
    this.cctx.setParameter(CParameter.nbWorkers, options.workers ?? 0);
    this.cctx.setParameter(CParameter.checksumFlag, 1);
    if (options.windowLog !== undefined) this.cctx.setParameter(CParameter.windowLog, options.windowLog);
    if (options.jobSize !== undefined) this.cctx.setParameter(CParameter.jobSize, options.jobSize);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.src = chunk;
    this.done = done;
    this.pump();
  }

  override _flush(done: TransformCallback): void {
    this.src = EMPTY;
    this.ending = true;
    this.done = done;
    this.pump();
  }

  override _read(size: number): void {
    // Owed until something is pushed, also when asked between chunks: Readable asks only once.
    this.readRequested = true;
    if (this.done === undefined) {
      super._read(size);
      return;
    }
    if (!this.pumping) this.pump();
  }

  private pump(): void {
    const done = this.done!;
    const { EndDirective } = binding();
    const directive = this.ending ? EndDirective.end : EndDirective.continue;
    let finished = false;
    let failure: unknown;
    this.pumping = true;
    try {
      for (;;) {
        // A new input chunk (Transform writes one when the last call pushed nothing) waits while the reader is full.
        if (this.readableLength >= this.readableHighWaterMark && !this.readRequested) break; // _read resumes
        const out = (this.out ??= Buffer.allocUnsafe(this.outSize));
        const [ret, produced, consumed] = this.cctx.compressStream2(out, this.src!, directive);
        this.src = this.src!.subarray(consumed);
        let room = true;
        if (produced > 0) {
          this.readRequested = false;
          // A nearly full buffer goes as it is; a few bytes are copied out, the buffer reused.
          let chunk: Buffer;
          if (produced >= this.outSize / 2) {
            chunk = out.subarray(0, produced);
            this.out = undefined;
          } else chunk = Buffer.from(out.subarray(0, produced));
          room = this.push(chunk);
        }
        if (this.src.length === 0 && (!this.ending || ret === 0)) {
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
    if (failure !== undefined) {
      done(failure as Error);
      return;
    }
    done();
    // As in the decompressor: a read still owed must release the write callback Transform parked.
    if (this.readRequested && !this.ending) super._read(this.readableHighWaterMark);
  }
}

const EMPTY = Buffer.alloc(0);

/** One compressor per level for zstdCompress: a context is megabytes to set up, and reused it is not. */
const oneShot = new Map<number, InstanceType<typeof ZstdNapi.Compressor>>();

/**
 * Compress bytes held in memory into one frame (checksummed, its size in the header). Cheap for
 * small inputs, where a fresh stream's context (sized for an unknown length) costs milliseconds and
 * megabytes of external memory that drive V8's garbage collector.
 */
export function zstdCompress(bytes: Uint8Array, level = 3): Buffer {
  let compressor = oneShot.get(level);
  if (compressor === undefined) {
    compressor = new (napi().Compressor)();
    compressor.setParameters({ compressionLevel: level, checksumFlag: true });
    oneShot.set(level, compressor);
  }
  return compressor.compress(bytes);
}

/**
 * Streaming decompression that honours backpressure inside one input chunk. zstd-napi's
 * DecompressStream pushes all the output of a chunk at once; with long-distance matching a 64 KiB
 * chunk can stand for tens of MB (a rebuilt layer that repeats an earlier one), which piled up
 * ~90 MB of buffers in `ferry import`. Here output goes out one block-sized buffer at a time and
 * the rest of the chunk waits until the reader wants more.
 */
class ZstdDecompressStream extends Transform {
  private readonly dctx = new (binding().DCtx)();
  private readonly outSize = binding().dStreamOutSize();
  private out: Buffer | undefined;
  private inFrame = false;
  /** The chunk being decompressed and its callback, while the reader is full. */
  private src: Buffer | undefined;
  private done: TransformCallback | undefined;
  private pumping = false;
  /** The reader asked for more and nothing was pushed since (push() can call _read synchronously). */
  private readRequested = false;

  private readonly windowLogMax: number;
  private readonly what: string;
  /** The start of the stream, kept until it holds the first frame's header (for the window error). */
  private head: Buffer = Buffer.alloc(0);
  private framesEnded = 0;

  constructor(options: ZstdDecompressOptions) {
    super({ readableHighWaterMark: binding().dStreamOutSize() });
    this.windowLogMax = options.windowLogMax ?? ZSTD_WINDOW_LOG_LIMIT;
    this.what = options.what ?? 'zstd stream';
    this.dctx.setParameter(binding().DParameter.windowLogMax, this.windowLogMax);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.head.length < ZSTD_FRAME_HEADER_MAX) this.head = Buffer.concat([this.head, chunk.subarray(0, ZSTD_FRAME_HEADER_MAX - this.head.length)]);
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

  private explain(err: unknown): Error {
    return explainDecodeError(err, { what: this.what, windowLogMax: this.windowLogMax, head: this.head, framesEnded: this.framesEnded });
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
        if (ret === 0) this.framesEnded++;
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
      done(this.explain(failure));
      return;
    }
    done();
    // A read still owed would never be asked again (Readable waits for a push): let Transform
    // release the write callback it may have parked, so the next chunk comes.
    if (wanted) super._read(this.readableHighWaterMark);
  }
}

/** The decoder's window refusal, in words that say which stream, how much, and what to do. */
function explainDecodeError(err: unknown, at: { what: string; windowLogMax: number; head: Buffer; framesEnded: number }): Error {
  if (!(err instanceof Error) || !/too much memory/i.test(err.message)) return err as Error;
  const declared = at.framesEnded === 0 ? zstdFrameWindowLog(at.head) : undefined;
  const needs = declared === undefined ? 'a window larger than' : `a ${formatWindow(declared)} window (2^${declared}), over`;
  return new FerryError('UNSUPPORTED', `${at.what}: zstd frame needs ${needs} the ${formatWindow(at.windowLogMax)} (2^${at.windowLogMax}) that ferry allows here`, {
    cause: err,
    hint: `decoding it would take that much memory; recompress it with a window of at most 2^${ZSTD_WINDOW_LOG_LIMIT} (zstd without --long above 27)`,
  });
}

/**
 * Output buffers of the decoder thread. Fewer, larger ones cross threads less often, but V8 frees
 * a dead buffer only at its next collection, which JavaScript allocation (not buffer bytes)
 * brings on: 256 KiB ones left up to ~40 MB dead between two in `ferry import`. Measured, the
 * seven-image import peaked at 253-256 MB with 256 KiB, 235-245 MB with 128 or 64 KiB (same CPU),
 * and 259-276 MB with 32 KiB.
 */
const THREAD_OUT_SIZE = 128 * 1024;
/** Output buffers in flight beyond the stream's own buffer. */
const THREAD_BUFFERS = 4;
/** Input chunks handed to the thread before the writer waits (chunks written meanwhile go together in the next). */
const THREAD_INPUTS = 4;
/**
 * Input buffers the thread gave back are used again up to this size. Chunks written while the
 * thread is busy go as one: a bundle's 128 KiB reads (bundle/volumes.ts), two at most, as the
 * stream's writable side buffers no more than its 16 KiB mark before the writer waits.
 */
const THREAD_IN_SIZE = 256 * 1024;

/**
 * ZstdDecompressStream's work on a thread of the native addon (native/zstd-thread.c): this
 * thread only hands buffers over, so what it does with the output (a bundle's layers unpacked)
 * runs alongside the decompression on another core. Input chunks are decoded in order into empty
 * buffers this stream gives, each handed back when filled; it gives one again for each the reader
 * has taken, so a few buffers at most wait beyond the stream's own, however much one chunk
 * expands. Same output, same errors, same bounded memory as on the calling thread. (A Node
 * worker thread did this before: its second JavaScript environment cost ~20 MB of peak RSS.)
 */
class ZstdThreadDecompressStream extends Duplex {
  private readonly native: NativeFs;
  private readonly handle: ZstdThreadHandle;
  private readonly windowLogMax: number;
  private readonly what: string;
  private head: Buffer = Buffer.alloc(0);
  private inputsQueued = 0;
  /** Input buffers back from the thread, to copy the next chunks into. */
  private readonly spare: Buffer[] = [];
  private writeDone: ((err?: Error | null) => void) | undefined;
  private finalDone: ((err?: Error | null) => void) | undefined;
  /** Buffers owed for outputs pushed while the reader was full, given when it reads again. */
  private owed = 0;
  /** The thread was stopped: it decoded the whole stream, or the stream was destroyed. */
  private stopped = false;

  constructor(options: ZstdDecompressOptions) {
    super({ readableHighWaterMark: THREAD_OUT_SIZE });
    this.windowLogMax = options.windowLogMax ?? ZSTD_WINDOW_LOG_LIMIT;
    this.what = options.what ?? 'zstd stream';
    this.native = nativeFs();
    this.handle = this.native.zstdThreadOpen(this.windowLogMax, (kind, buffer, length, framesEnded, inFrame, message) => {
      // Called from the addon's queue: an exception here would be uncaught.
      try {
        this.onEvent(kind, buffer, length, framesEnded, inFrame, message);
      } catch (err) {
        this.destroy(err as Error);
      }
    });
    for (let i = 0; i < THREAD_BUFFERS; i++) this.giveBuffer();
  }

  private onEvent(kind: number, buffer: Buffer | undefined, length: number, framesEnded: number, inFrame: boolean, message: string | undefined): void {
    if (this.destroyed || this.stopped) return;
    switch (kind) {
      case ZSTD_THREAD_OUTPUT:
        if (this.push(buffer!.subarray(0, length))) this.giveBuffer();
        else this.owed++;
        return;
      case ZSTD_THREAD_CONSUMED: {
        this.inputsQueued--;
        if (buffer!.buffer.byteLength === THREAD_IN_SIZE && this.spare.length < THREAD_INPUTS) this.spare.push(Buffer.from(buffer!.buffer));
        const done = this.writeDone;
        this.writeDone = undefined;
        done?.();
        return;
      }
      case ZSTD_THREAD_ENDED: {
        const done = this.finalDone;
        this.finalDone = undefined;
        if (inFrame) {
          done?.(new Error('Stream ended in middle of compressed data frame'));
          return;
        }
        this.stopThread();
        this.push(null);
        done?.();
        return;
      }
      case ZSTD_THREAD_ERROR:
        this.destroy(explainDecodeError(new Error(message ?? 'zstd decompression failed'), { what: this.what, windowLogMax: this.windowLogMax, head: this.head, framesEnded }));
    }
  }

  /** Stop and join the thread (it has nothing left to do, or nobody waits for it). */
  private stopThread(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.native.zstdThreadClose(this.handle);
  }

  /** An empty output buffer for the thread to fill. */
  private giveBuffer(): void {
    if (!this.stopped) this.native.zstdThreadBuffer(this.handle, Buffer.allocUnsafeSlow(THREAD_OUT_SIZE));
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this._writev([{ chunk }], done);
  }

  /** The chunks written while the thread was busy, handed to it as one. */
  override _writev(chunks: Array<{ chunk: Buffer }>, done: (err?: Error | null) => void): void {
    let length = 0;
    for (const { chunk } of chunks) length += chunk.length;
    if (length === 0 || this.stopped) {
      // Nothing to decode (and the decoder's answer to no input would read as a frame left open).
      done();
      return;
    }
    if (this.head.length < ZSTD_FRAME_HEADER_MAX) {
      const first = chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk));
      this.head = Buffer.concat([this.head, first.subarray(0, ZSTD_FRAME_HEADER_MAX - this.head.length)]);
    }
    // A copy of its own for the thread: a chunk may be a view of a buffer its producer reuses.
    const buffer = length <= THREAD_IN_SIZE ? (this.spare.pop() ?? Buffer.allocUnsafeSlow(THREAD_IN_SIZE)) : Buffer.allocUnsafeSlow(length);
    let at = 0;
    for (const { chunk } of chunks) at += chunk.copy(buffer, at);
    this.native.zstdThreadInput(this.handle, buffer.subarray(0, length));
    this.inputsQueued++;
    if (this.inputsQueued < THREAD_INPUTS) done();
    else this.writeDone = done;
  }

  override _final(done: (err?: Error | null) => void): void {
    if (this.stopped) {
      done();
      return;
    }
    this.finalDone = done;
    this.native.zstdThreadEnd(this.handle);
  }

  override _read(): void {
    for (; this.owed > 0; this.owed--) this.giveBuffer();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.stopThread();
    done(err);
  }
}

/**
 * zstd's own default limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT): a 128 MiB window, what `zstd -d` and
 * `tar --zstd` accept. A frame's declared window is memory the decoder fills, whatever the input
 * size (a 112 KB frame declaring 2 GiB took 2.19 GB), so only ferry's own bundles, whose header
 * declares a larger window, are read with more.
 */
export const ZSTD_WINDOW_LOG_LIMIT = 27;
/** The largest window log zstd has (on 64-bit). */
export const ZSTD_WINDOW_LOG_MAX = 31;
/** Bytes of a zstd frame header at most: magic, descriptor, window, dictionary id, content size. */
export const ZSTD_FRAME_HEADER_MAX = 18;

export interface ZstdDecompressOptions {
  /** Largest window (log2) a frame may declare; default ZSTD_WINDOW_LOG_LIMIT (27). */
  windowLogMax?: number;
  /** Names the stream in errors (e.g. the layer and its digest). */
  what?: string;
}

export function zstdDecompressStream(options: ZstdDecompressOptions = {}): Transform {
  return new ZstdDecompressStream(options);
}

/**
 * zstdDecompressStream on a worker thread, for one long stream whose reader has work of its own
 * (a bundle, whose layers are unpacked as they pass): the two overlap on two cores. Costs a thread
 * start (tens of ms) and the worker's few MB, so not for small streams.
 */
export function zstdDecompressStreamOnThread(options: ZstdDecompressOptions = {}): Duplex {
  return new ZstdThreadDecompressStream(options);
}

/**
 * The window (log2, rounded up) that the zstd frame at the start of `head` declares, as the
 * decoder compares it with its limit; undefined when `head` is not (yet) a whole frame header.
 */
export function zstdFrameWindowLog(head: Buffer): number | undefined {
  if (head.length < 5 || !head.subarray(0, 4).equals(ZSTD_MAGIC)) return undefined;
  const descriptor = head[4]!;
  const fcsFlag = descriptor >> 6;
  const singleSegment = (descriptor & 0x20) !== 0;
  let at = 5;
  let windowSize: number;
  if (!singleSegment) {
    const byte = head[at++];
    if (byte === undefined) return undefined;
    const base = 2 ** (10 + (byte >> 3));
    windowSize = base + (base / 8) * (byte & 7);
  } else {
    // A single-segment frame's window is its content size.
    at += [0, 1, 2, 4][descriptor & 3]!;
    const fcsBytes = [1, 2, 4, 8][fcsFlag]!;
    if (head.length < at + fcsBytes) return undefined;
    if (fcsBytes === 1) windowSize = head[at]!;
    else if (fcsBytes === 2) windowSize = head.readUInt16LE(at) + 256;
    else if (fcsBytes === 4) windowSize = head.readUInt32LE(at);
    else windowSize = Number(head.readBigUInt64LE(at));
  }
  return Math.max(10, Math.ceil(Math.log2(Math.max(windowSize, 1))));
}

function formatWindow(log: number): string {
  return log >= 30 ? `${2 ** (log - 30)} GiB` : log >= 20 ? `${2 ** (log - 20)} MiB` : `${2 ** (log - 10)} KiB`;
}

/** Memory a decoder needs for a frame of this window: the window itself plus small buffers. */
export function zstdDecodeMemory(windowLog: number): number {
  return 2 ** windowLog + 2 * 128 * 1024;
}

/** The zstd frame magic, for telling a .zst stream from a plain tar. */
export const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
