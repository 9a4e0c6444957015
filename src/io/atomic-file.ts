import { closeSync, fsyncSync, lstatSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { access, mkdir, open, rename, rm, unlink, type FileHandle } from './fs-promises.js';
import { dirname, basename, join } from 'node:path';
import { FerryError, messageOf } from '../errors.js';
import { nativeFs } from './native.js';
import { randomBytes } from './random.js';

/**
 * How a file others can see is written (containerd's ingest and commit): bytes go to a temp file on
 * the target's filesystem, which is then made durable, renamed into place and its directory
 * fsynced; a failed or abandoned write removes its temp file, so nothing is ever visible half
 * written. `Ingestion` is that sequence; `writeFileAtomic` writes bytes held in memory with it, and
 * io/ingest.ts's `ingestFile` streams into it with the digest and size checked on the way.
 *
 * Durability comes in two modes. `fsync` (the default): the file and its directory are fsynced
 * before commit returns. `batch`: the written file stays staged at its temp path (found there with
 * IngestBatch.stagedAt) and IngestBatch.commit makes every staged file durable with one syncfs,
 * renames them and fsyncs each directory once. Just as crash-safe: nothing is at its final name
 * before its bytes are durable, and a crash before that leaves only temp files.
 */

/** fsync a directory so a rename in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A temp name beside `path`, in the same directory so the final rename is atomic. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** What to do when the target exists at commit (a content-addressed name holds the same bytes). */
export type IfExists = 'keep' | 'replace';

export interface CommitOptions {
  /** `keep`: drop the temp file and report `existed`; `replace` (default): rename over it. */
  ifExists?: IfExists;
  /** Stage into this batch instead of fsync and rename now (durable: 'batch'). */
  batch?: IngestBatch;
  /** Create the target's directory with this mode when missing. */
  dirMode?: number;
  /** Runs the final existence check and rename, e.g. under a store lock that gc also takes. */
  renameUnder?: <T>(commit: () => Promise<T>) => Promise<T>;
}

/** An ingestion in flight: a temp file written whole or at positions, then committed or aborted. */
export class Ingestion {
  readonly tmp: string;
  readonly handle: FileHandle;
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private position = 0;

  private constructor(tmp: string, handle: FileHandle) {
    this.tmp = tmp;
    this.handle = handle;
  }

  /** Create the temp file `tmp` (never an existing one); on the target's filesystem, so the rename is atomic. */
  static async open(tmp: string, mode = 0o644): Promise<Ingestion> {
    return new Ingestion(tmp, await open(tmp, 'wx', mode));
  }

  /** Write all of `data` at `position`, or after what was written last. */
  async write(data: Uint8Array, position?: number): Promise<void> {
    let at = position ?? this.position;
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, at);
      done += bytesWritten;
      at += bytesWritten;
    }
    if (position === undefined) this.position = at;
  }

  /** Append `chunks` after what was written last: one writev for many small network chunks. */
  async writev(chunks: readonly Buffer[]): Promise<void> {
    let rest = [...chunks];
    while (rest.length > 0) {
      let { bytesWritten } = await this.handle.writev(rest, this.position);
      this.position += bytesWritten;
      // A short write: drop what went, keep the rest of a chunk cut in the middle.
      while (rest.length > 0 && bytesWritten >= rest[0]!.length) bytesWritten -= rest.shift()!.length;
      if (bytesWritten > 0) rest[0] = rest[0]!.subarray(bytesWritten);
    }
  }

  /**
   * Put the written file in place at `target`: fsync, rename, fsync the directory (or stage it
   * into `batch`). True when the target was there already and kept (ifExists 'keep').
   * On failure the temp file is removed.
   */
  async commit(target: string, options: CommitOptions = {}): Promise<boolean> {
    if (this.state !== 'open') throw new Error(`ingestion ${this.tmp}: commit after ${this.state}`);
    const batch = options.batch;
    try {
      // In batch mode the one syncfs covers the bytes: no fsync per file (unless the batch asks).
      if (batch === undefined || batch.syncEach) await this.handle.sync();
      await this.handle.close();
    } catch (err) {
      this.state = 'aborted';
      await rm(this.tmp, { force: true });
      throw err;
    }
    this.state = 'committed';
    try {
      if (options.dirMode !== undefined) await makeDir(dirname(target), options.dirMode);
      const place = async (): Promise<boolean> => {
        if (options.ifExists === 'keep' && (batch?.stagedAt(target) !== undefined || (await pathExists(target)))) {
          await unlink(this.tmp);
          return true;
        }
        if (batch !== undefined) {
          // Two ingestions of one name staged at once: the later one's verified bytes stay.
          const earlier = batch.stage(target, this.tmp);
          if (earlier !== undefined) await rm(earlier, { force: true });
          return false;
        }
        await rename(this.tmp, target);
        await syncDir(dirname(target));
        return false;
      };
      return await (options.renameUnder === undefined ? place() : options.renameUnder(place));
    } catch (err) {
      await rm(this.tmp, { force: true });
      throw err;
    }
  }

  /** Give up: the temp file goes. Nothing once committed (a staged file belongs to its batch). */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    try {
      await this.handle.close();
    } finally {
      await rm(this.tmp, { force: true });
    }
  }
}

/** Is there anything at `path` (a dangling symlink counts)? Synchronous: one lstat, no thread-pool round trip. */
export function pathExistsNow(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Create `dir` (and missing parents) with `mode`; when it made any, fsync the parent of each it
 * made, so the new directories survive a crash as the files renamed into them will.
 */
export async function makeDir(dir: string, mode: number): Promise<void> {
  const made = await mkdir(dir, { recursive: true, mode });
  if (made === undefined) return;
  for (let d = dir; ; d = dirname(d)) {
    await syncDir(dirname(d));
    if (d === made || d === dirname(d)) break;
  }
}

/** Is there anything at `path`? */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Files ingested with durable: 'batch', verified and staged at their temp paths until commit:
 * one syncfs for all of them instead of two fsyncs each (an import of many blobs).
 */
export class IngestBatch {
  /** target -> temp file holding its bytes. */
  private readonly staged = new Map<string, string>();
  /**
   * Each file is fsynced as it is staged and commit needs no syncfs: the files become durable
   * one by one as they are written (volumes on slow media) and visible only together at commit.
   */
  readonly syncEach: boolean;

  constructor(options: { syncEach?: boolean } = {}) {
    this.syncEach = options.syncEach ?? false;
  }

  /** Where `target`'s bytes are while staged: its temp file. */
  stagedAt(target: string): string | undefined {
    return this.staged.get(target);
  }

  get size(): number {
    return this.staged.size;
  }

  /** Called by Ingestion.commit: the temp file is the batch's now. Returns the temp file it replaces, if any. */
  stage(target: string, tmp: string): string | undefined {
    const earlier = this.staged.get(target);
    this.staged.set(target, tmp);
    return earlier;
  }

  /**
   * Make every staged file durable (one syncfs of their filesystem; none with syncEach), rename each into place,
   * then fsync each directory once. Another writer may have put the same name there meanwhile:
   * staged files are verified content, so replacing it is harmless. On failure what is not yet
   * renamed stays staged (see discard).
   */
  async commit(): Promise<void> {
    const batch = [...this.staged];
    const first = batch[0];
    if (first === undefined) return;
    try {
      if (!this.syncEach) nativeFs().syncfs(dirname(first[1]));
      const dirs = new Set<string>();
      for (const [target, tmp] of batch) {
        await rename(tmp, target);
        this.staged.delete(target);
        dirs.add(dirname(target));
      }
      for (const dir of dirs) await syncDir(dir);
    } catch (err) {
      throw ioError(`commit ${batch.length} ingested files into ${dirname(first[0])}`, err);
    }
  }

  /** Drop what is staged: the temp files are removed. */
  async discard(): Promise<void> {
    for (const [target, tmp] of [...this.staged]) {
      await rm(tmp, { force: true });
      this.staged.delete(target);
    }
  }
}

/** I/O failures as FerryErrors naming what failed; a full disk is NO_SPACE. */
export function ioError(what: string, err: unknown): FerryError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new FerryError('NO_SPACE', `${what}: no space left`, { cause: err, hint: 'free space, or write to a larger filesystem' });
  }
  return new FerryError('IO_ERROR', `${what}: ${messageOf(err)}`, { cause: err });
}


/**
 * Write a whole file atomically: an Ingestion of `data`, fsync, rename, fsync the directory. `tmp`
 * may name another place on the same filesystem (the store keeps its temp files in tmp/, swept at
 * start). `beforeRename` runs once the temp file is written, before its fsync and rename: work
 * that must be durable before the file becomes visible (one syncfs can then cover both).
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
  tmp = tempPathFor(path),
  beforeRename?: () => Promise<void>,
): Promise<void> {
  let ingestion: Ingestion | undefined;
  try {
    ingestion = await Ingestion.open(tmp, mode);
    await ingestion.write(typeof data === 'string' ? Buffer.from(data) : data);
    await beforeRename?.();
    await ingestion.commit(path);
  } catch (err) {
    await ingestion?.abort();
    throw new FerryError('IO_ERROR', `write ${path}: ${messageOf(err)}`, { cause: err });
  }
}

/**
 * writeFileAtomic's steps (temp file, fsync, rename, directory fsync) as synchronous calls, for the
 * small records a container start writes (its config, rootfs plan and state): each async step is a
 * thread-pool round trip, and on a busy machine those cost more than the syscalls (issue 16). It
 * blocks the event loop for its fsyncs: not for paths with transfers in flight.
 */
export function writeFileAtomicSync(path: string, data: string | Uint8Array, mode = 0o644, tmp = tempPathFor(path)): void {
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', mode);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done, done);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw new FerryError('IO_ERROR', `write ${path}: ${messageOf(err)}`, { cause: err });
  }
}
