import type { Transform } from 'node:stream';
import { CompressStream, DecompressStream } from 'zstd-napi';

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

/** `windowLogMax` lets ferry read its own bundles written with a window above zstd's default limit (27). */
export function zstdDecompressStream(windowLogMax = 31): Transform {
  return new DecompressStream({ windowLogMax });
}

/** Memory a decoder needs for a frame of this window: the window itself plus small buffers. */
export function zstdDecodeMemory(windowLog: number): number {
  return 2 ** windowLog + 2 * 128 * 1024;
}

/** The zstd frame magic, for telling a .zst stream from a plain tar. */
export const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
