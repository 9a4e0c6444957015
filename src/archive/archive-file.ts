import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { FerryError, messageOf } from '../errors.js';
import type { Resolved } from '../oci/image.js';
import { zstdDecompressStream } from '../io/zstd.js';
import { indexTar, type TarIndex } from './tar-index.js';

export interface ArchiveOptions {
  /**
   * Where a compressed archive is decompressed to (a plain tar beside nothing else), since a
   * compressed stream has no random access. Default: the OS temp directory. The store passes its tmp/.
   */
  tmpDir?: string;
  signal?: AbortSignal;
  /** Archives opened once for the whole command (see SharedArchives): closing them is its owner's. */
  shared?: SharedArchives;
}

/** An archive opened for reading; `close()` removes any temporary copy. Images stay usable until then. */
export interface OpenedTar {
  readonly index: TarIndex;
  close(): Promise<void>;
}

type Compression = 'none' | 'gzip' | 'zstd' | 'bzip2' | 'xz';

function sniff(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
  if (head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  return 'none';
}

/** How a stored blob or layer is compressed, judged by its first bytes. */
export function sniffCompression(head: Buffer): 'none' | 'gzip' | 'zstd' | 'other' {
  const c = sniff(head);
  return c === 'bzip2' || c === 'xz' ? 'other' : c;
}

/**
 * Open a tar archive for random access: a plain tar is indexed in place; a gzip or zstd one is
 * first decompressed (streaming) to a temporary tar under `tmpDir`. `what` names it in errors.
 */
export async function openTarArchive(file: string, what: string, options: ArchiveOptions = {}): Promise<OpenedTar> {
  let head: Buffer;
  try {
    const st = await stat(file);
    if (st.isDirectory()) {
      throw new FerryError('USAGE', `${what}: is a directory, not an archive file`, {
        hint: 'for an OCI image layout directory use the oci: location instead of oci-archive:',
      });
    }
    const handle = await open(file, 'r');
    try {
      head = Buffer.alloc(6);
      const { bytesRead } = await handle.read(head, 0, 6, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof FerryError) throw err;
    const code = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR';
    throw new FerryError(code, `${what}: cannot open: ${messageOf(err)}`, { cause: err });
  }
  const compression = sniff(head);
  if (compression === 'bzip2' || compression === 'xz') {
    throw new FerryError('UNSUPPORTED', `${what}: ${compression}-compressed archives are not supported`, {
      hint: `decompress it first (${compression === 'xz' ? 'xz -d' : 'bunzip2'}), or recompress it with gzip or zstd`,
    });
  }
  if (compression === 'none') {
    return { index: await indexTar(file, what), close: async () => undefined };
  }
  const dir = await mkdtemp(join(options.tmpDir ?? tmpdir(), 'ferry-archive-'));
  const plain = join(dir, 'archive.tar');
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    const decompress: Transform = compression === 'gzip' ? createGunzip() : zstdDecompressStream();
    await pipeline(createReadStream(file), decompress, createWriteStream(plain, { flags: 'wx' }), options.signal ? { signal: options.signal } : {}).catch(
      (err: unknown) => {
        const e = err as NodeJS.ErrnoException;
        if (e.name === 'AbortError') throw err;
        if (e.syscall !== undefined) {
          // The file system failed (disk full, permissions), not the data.
          throw new FerryError(e.code === 'ENOSPC' ? 'NO_SPACE' : 'IO_ERROR', `${what}: decompress to ${plain}: ${messageOf(err)}`, {
            cause: err,
            hint: 'the archive is decompressed to a temporary file first; choose a temp directory with enough space',
          });
        }
        throw new FerryError('INVALID_MANIFEST', `${what}: cannot decompress (${compression}): ${messageOf(err)}`, {
          cause: err,
          hint: 'the file is damaged or truncated; copy it again',
        });
      },
    );
    return { index: await indexTar(plain, what), close: cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/**
 * The archives one command reads several images from (`export oci-archive:F:a oci-archive:F:b
 * ...`): each is indexed, and a compressed one decompressed to a temporary tar, once rather than
 * once per image (which took N passes over the file and N temporary copies at once). The images
 * stay readable until `close()`, after the command is done with all of them.
 */
export class SharedArchives {
  private readonly opened = new Map<string, Promise<OpenedTar>>();

  constructor(private readonly options: Omit<ArchiveOptions, 'shared'> = {}) {}

  /** The archive `file`, opened on first use; `what` names it in errors (and tells the kinds apart). */
  open(file: string, what: string): Promise<OpenedTar> {
    const key = `${what}\n${file}`;
    let job = this.opened.get(key);
    if (job === undefined) {
      job = openTarArchive(file, what, this.options);
      this.opened.set(key, job);
    }
    return job;
  }

  async close(): Promise<void> {
    const jobs = [...this.opened.values()];
    this.opened.clear();
    // One that failed to open left nothing to close; its caller had the error.
    for (const settled of await Promise.allSettled(jobs)) if (settled.status === 'fulfilled') await settled.value.close();
  }
}

/** The archive through `options.shared` when given (closed by its owner), else opened for the caller alone. */
export async function openArchiveFor(file: string, what: string, options: ArchiveOptions): Promise<OpenedTar> {
  if (options.shared === undefined) return openTarArchive(file, what, options);
  const archive = await options.shared.open(file, what);
  return { index: archive.index, close: async () => undefined };
}

/** Images read from an archive file; they stay readable until `close()` removes any temporary copy. */
export interface OpenedArchive extends Resolved {
  close(): Promise<void>;
}
