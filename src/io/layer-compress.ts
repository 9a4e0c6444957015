import type { Readable, Transform } from 'node:stream';
import { createGzip, constants as zlibConstants } from 'node:zlib';
import { UsageError } from '../errors.js';
import { chain } from './layer-forms.js';
import { zstdCompressStream } from './zstd.js';

/** How layers held uncompressed are compressed for a registry. */
export type PushCompression = 'gzip' | 'zstd';

export function parseCompression(text: string | undefined): PushCompression {
  if (text === undefined || text === 'gzip') return 'gzip';
  if (text === 'zstd') return 'zstd';
  throw new UsageError(`--compress "${text}": use gzip or zstd`, { hint: 'gzip is read by every engine; zstd needs containerd 1.5+, docker 23+ or podman 3+' });
}

/**
 * A compressor whose output depends only on its input: the same layer compresses to the same
 * digest on every push and every `ferry serve`, so a second push finds its blobs present.
 */
export function compressor(compression: PushCompression): Transform {
  if (compression === 'gzip') return createGzip({ level: zlibConstants.Z_DEFAULT_COMPRESSION });
  // Single-threaded: zstd's output is deterministic for a given level either way, and pushes run several at once.
  return zstdCompressStream({ level: 3, workers: 0 });
}

export function compress(tar: Readable, compression: PushCompression): Readable {
  return chain(tar, compressor(compression));
}

