import { rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError, isFerryError } from '../errors.js';
import { digestAlgorithm, digestOf, type Digest, type DigestAlgorithm } from '../oci/digest.js';
import { Ingestion, ioError, makeDir, pathExists, pathExistsNow, tempPathFor, type CommitOptions } from './atomic-file.js';
import { nodeStream, nodeStreamPromises } from './builtins.js';

/**
 * The one ingestion primitive: every writer and cache that lands a stream of bytes in a file uses
 * `ingestFile` (temp file, digest and size verified while writing, fsync, rename, fsync dir; or
 * staged into an IngestBatch, see io/atomic-file.ts). Digests are checked where bytes enter.
 */

/** Bytes gathered before one writev (see ingestFile). */
const WRITE_BATCH = 1024 * 1024;

export interface IngestOptions extends CommitOptions {
  /** The expected digest: checked while writing, the ingestion fails at end of stream otherwise. */
  digest?: Digest;
  /**
   * The source checks `digest` itself and fails at its end when the bytes differ (an Image's
   * blob(), which verifies at the boundary where the bytes entered): they are not hashed twice.
   * Nothing is renamed into place before the source has ended without error.
   */
  sourceVerifies?: boolean;
  /** The expected size: a stream that runs past it fails at once. */
  size?: number;
  /** The algorithm to measure with when no digest is expected (default sha256). */
  algorithm?: DigestAlgorithm;
  /** Names the bytes in errors ("blob sha256:... of docker.io/library/redis"). */
  what?: string;
  signal?: AbortSignal;
  /** Called with each chunk's length as it is written. */
  onBytes?: (n: number) => void;
  /** The file's mode (default 0o644). */
  mode?: number;
  /** The temp file: beside the target by default; required when the target is named by the digest. */
  tmp?: string;
}

export interface Ingested {
  path: string;
  digest: Digest;
  /** Bytes that went through (0 when the target was there already before the first byte). */
  size: number;
  /** The target was there already and was kept (ifExists 'keep'). */
  existed: boolean;
}

/**
 * Ingest `source` into the file `target` (or the path `target(digest)` once the digest is known):
 * temp file, digest and size checked while writing, fsync, rename, fsync dir; or staged into a
 * batch. With ifExists 'keep', an expected digest and a target named up front that exists (or is
 * staged) already, the source is drained and nothing is written. Errors are FerryErrors naming `what` and the path:
 * DIGEST_MISMATCH and SIZE_MISMATCH (the transfer engine fetches again on those), NO_SPACE,
 * IO_ERROR; a FerryError or an AbortError of the source passes as it is.
 */
export async function ingestFile(target: string | ((digest: Digest) => string), source: Readable, options: IngestOptions = {}): Promise<Ingested> {
  // The source is in our hands from here, before the pipeline below takes it: an error it meets
  // meanwhile (aborted while the temp file opens) must not be thrown as uncaught. The listener
  // only defers it: the stream keeps it (`errored`), and the pipeline reports it when attached.
  const deferEarlyError = (): void => undefined;
  source.on('error', deferEarlyError);
  try {
    return await ingestOwned(target, source, options);
  } catch (err) {
    // Failed before the source was drained (no temp file, no space): release its connection.
    source.destroy();
    throw err;
  } finally {
    source.off('error', deferEarlyError);
  }
}

async function ingestOwned(target: string | ((digest: Digest) => string), source: Readable, options: IngestOptions): Promise<Ingested> {
  const named = typeof target === 'string' ? target : undefined;
  if (named === undefined && options.tmp === undefined) throw new Error('ingestFile: a target named by its digest needs a tmp path');
  const what = options.what ?? (options.digest === undefined ? 'file' : `blob ${options.digest}`);
  const where = named ?? dirname(options.tmp!);
  if (named !== undefined && options.ifExists === 'keep' && options.digest !== undefined && (options.batch?.stagedAt(named) !== undefined || (await pathExists(named)))) {
    source.resume();
    await nodeStreamPromises().finished(source);
    return { path: named, digest: options.digest, size: 0, existed: true };
  }
  // A temp file beside the target needs its directory now, not at commit.
  if (options.tmp === undefined && options.dirMode !== undefined) await makeDir(dirname(named!), options.dirMode);
  const tmp = options.tmp ?? tempPathFor(named!);
  let ingestion: Ingestion | undefined;
  // Node 20's pipeline reports an AbortError instead of what the last stage threw: keep that here.
  let sinkError: unknown;
  try {
    // The digest stages (and node:stream with them) load with the first stream ingested: a store
    // opened to read, as by a container start, writes nothing through here.
    const { MeasureDigest, VerifyDigest } = await import('./verify-digest.js');
    ingestion = await Ingestion.open(tmp, options.mode);
    const trusted = options.digest !== undefined && options.sourceVerifies === true;
    const check =
      options.digest === undefined
        ? new MeasureDigest(options.algorithm)
        : trusted
          ? new (nodeStream().PassThrough)()
          : new VerifyDigest(options.digest, { what: `${what} at ${where}`, ...(options.size === undefined ? {} : { size: options.size }) });
    // The size is counted here when nothing else checks it.
    const size = options.digest === undefined || trusted ? options.size : undefined;
    const file = ingestion;
    let written = 0;
    // Network chunks are small (16-64 KiB): gathered up to WRITE_BATCH and written with one
    // writev, one thread-pool round trip instead of one per chunk; memory stays bounded.
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      if (pendingBytes === 0) return;
      const batch = pending;
      const bytes = pendingBytes;
      pending = [];
      pendingBytes = 0;
      await file.writev(batch);
      options.onBytes?.(bytes);
    };
    await nodeStreamPromises().pipeline(
      source,
      check,
      async (chunks: AsyncIterable<Buffer>) => {
        try {
          for await (const chunk of chunks) {
            written += chunk.length;
            if (size !== undefined && written > size) throw new FerryError('SIZE_MISMATCH', `${what} at ${where}: more than the expected ${size} bytes`);
            pending.push(chunk);
            pendingBytes += chunk.length;
            if (pendingBytes >= WRITE_BATCH || pending.length >= 256) await flush();
          }
          await flush();
        } catch (err) {
          sinkError = err;
          throw err;
        }
      },
      options.signal === undefined ? {} : { signal: options.signal },
    );
    if (size !== undefined && written !== size) throw new FerryError('SIZE_MISMATCH', `${what} at ${where}: got ${written} bytes, expected ${size}`);
    const digest = check instanceof MeasureDigest ? check.digest : options.digest!;
    const path = named ?? (target as (d: Digest) => string)(digest);
    const existed = await ingestion.commit(path, options);
    return { path, digest, size: written, existed };
  } catch (caught) {
    await ingestion?.abort();
    const err = sinkError ?? caught;
    if (isFerryError(err) || (err instanceof Error && err.name === 'AbortError')) throw err;
    throw ioError(`write ${what} to ${where}`, err);
  }
}

/**
 * Ingest bytes held in memory (a manifest, a config, an index) into `target`: ingestFile's checks
 * and durability in one call. Digest and size are checked before anything is written. Staged into
 * a batch, the temp file is written with one synchronous write: for a few hundred bytes, the
 * thread-pool round trips of a stream's async open, write, close and existence checks (about six)
 * cost far more than the write, per blob of an import of hundreds of images. The batch's commit
 * then makes it durable and renames it as any staged file (no weaker). Alone, it is an Ingestion:
 * fsync, rename, fsync dir.
 */
export async function ingestBytes(target: string, bytes: Uint8Array, options: IngestOptions & { digest: Digest }): Promise<Ingested> {
  const what = options.what ?? `blob ${options.digest}`;
  options.signal?.throwIfAborted();
  if (options.size !== undefined && bytes.length !== options.size) {
    throw new FerryError('SIZE_MISMATCH', `${what} at ${target}: got ${bytes.length} bytes, expected ${options.size}`);
  }
  const actual = digestOf(bytes, digestAlgorithm(options.digest));
  if (actual !== options.digest) throw new FerryError('DIGEST_MISMATCH', `${what} at ${target}: content hashes to ${actual}, expected ${options.digest}`);
  const existed = { path: target, digest: options.digest, size: 0, existed: true };
  const batch = options.batch;
  if (batch === undefined) {
    if (options.ifExists === 'keep' && (await pathExists(target))) return existed;
    if (options.tmp === undefined && options.dirMode !== undefined) await makeDir(dirname(target), options.dirMode);
    let ingestion: Ingestion | undefined;
    try {
      ingestion = await Ingestion.open(options.tmp ?? tempPathFor(target), options.mode);
      await ingestion.write(bytes);
      const kept = await ingestion.commit(target, options);
      return kept ? existed : { path: target, digest: options.digest, size: bytes.length, existed: false };
    } catch (err) {
      await ingestion?.abort();
      if (isFerryError(err)) throw err;
      throw ioError(`write ${what} to ${dirname(target)}`, err);
    }
  }
  // The directory first (async only when missing); from the check to the staging nothing awaits,
  // so no other ingestion of this name can come between.
  if (options.dirMode !== undefined && !pathExistsNow(dirname(target))) await makeDir(dirname(target), options.dirMode);
  const place = async (): Promise<Ingested> => {
    if (options.ifExists === 'keep' && (batch.stagedAt(target) !== undefined || pathExistsNow(target))) return existed;
    const tmp = options.tmp ?? tempPathFor(target);
    try {
      writeFileSync(tmp, bytes, { flag: 'wx', mode: options.mode ?? 0o644 });
    } catch (err) {
      // 'wx': an EEXIST is someone else's file, anything else leaves at most our partial one.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') rmSync(tmp, { force: true });
      throw ioError(`write ${what} to ${dirname(tmp)}`, err);
    }
    // Two ingestions of one name staged at once (ifExists 'replace'): the later one's bytes stay.
    const earlier = batch.stage(target, tmp);
    if (earlier !== undefined) rmSync(earlier, { force: true });
    return { path: target, digest: options.digest, size: bytes.length, existed: false };
  };
  return options.renameUnder === undefined ? place() : options.renameUnder(place);
}

