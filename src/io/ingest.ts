import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { FerryError, isFerryError } from '../errors.js';
import type { Digest, DigestAlgorithm } from '../oci/digest.js';
import { Ingestion, ioError, makeDir, pathExists, tempPathFor, type CommitOptions } from './atomic-file.js';
import { MeasureDigest, VerifyDigest } from './verify-digest.js';

/**
 * The one ingestion primitive: every writer and cache that lands a stream of bytes in a file uses
 * `ingestFile` (temp file, digest and size verified while writing, fsync, rename, fsync dir; or
 * staged into an IngestBatch, see io/atomic-file.ts). Digests are checked where bytes enter.
 */

export interface IngestOptions extends CommitOptions {
  /** The expected digest: checked while writing, the ingestion fails at end of stream otherwise. */
  digest?: Digest;
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
  const named = typeof target === 'string' ? target : undefined;
  if (named === undefined && options.tmp === undefined) throw new Error('ingestFile: a target named by its digest needs a tmp path');
  const what = options.what ?? (options.digest === undefined ? 'file' : `blob ${options.digest}`);
  const where = named ?? dirname(options.tmp!);
  if (named !== undefined && options.ifExists === 'keep' && options.digest !== undefined && (options.batch?.stagedAt(named) !== undefined || (await pathExists(named)))) {
    source.resume();
    await finished(source);
    return { path: named, digest: options.digest, size: 0, existed: true };
  }
  // A temp file beside the target needs its directory now, not at commit.
  if (options.tmp === undefined && options.dirMode !== undefined) await makeDir(dirname(named!), options.dirMode);
  const tmp = options.tmp ?? tempPathFor(named!);
  let ingestion: Ingestion | undefined;
  // Node 20's pipeline reports an AbortError instead of what the last stage threw: keep that here.
  let sinkError: unknown;
  try {
    ingestion = await Ingestion.open(tmp, options.mode);
    const check =
      options.digest === undefined ? new MeasureDigest(options.algorithm) : new VerifyDigest(options.digest, { what: `${what} at ${where}`, ...(options.size === undefined ? {} : { size: options.size }) });
    const size = options.digest === undefined ? options.size : undefined;
    const file = ingestion;
    let written = 0;
    await pipeline(
      source,
      check,
      async (chunks: AsyncIterable<Buffer>) => {
        try {
          for await (const chunk of chunks) {
            written += chunk.length;
            if (size !== undefined && written > size) throw new FerryError('SIZE_MISMATCH', `${what} at ${where}: more than the expected ${size} bytes`);
            await file.write(chunk);
            options.onBytes?.(chunk.length);
          }
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
