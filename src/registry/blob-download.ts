import { Readable } from 'node:stream';
import { FerryError, isFerryError } from '../errors.js';
import { ingestFile } from '../io/ingest.js';
import { Digester, digestAlgorithm, type Digest } from '../oci/digest.js';
import type { Limiter } from '../oci/limiter.js';
import { MAX_MANIFEST_BYTES } from '../oci/manifest.js';
import { repositoryScope } from './auth.js';
import { blobWhat, holdSlot, repoPath, type BlobHomes, type BlobTarget, type CallOptions, type RegistryCall, type Repository } from './exchange.js';
import { backoffDelay, isTransient, retryDelay, sleep, withRetry, type RetryPolicy } from './retry.js';
import { abortError, headerValue, type HttpResponse } from './transport.js';

/**
 * Blob download: a blob streams with its digest checked at the end; a dropped connection is
 * resumed with Range from the byte reached (hashing continues across the resume); a blob that
 * arrives whole but wrong is fetched again (getBlobBytes, downloadBlob). Each open stream holds
 * one of the download slots until it closes.
 */

export interface OpenBlobOptions extends CallOptions {
  /** Hash while streaming and fail at the end on a mismatch (default true). */
  verify?: boolean;
}

export interface BlobDownloadOptions {
  /** The registry's layered exchange. */
  call: RegistryCall;
  retry: RetryPolicy;
  /** Download slots (the caller's limit). */
  slots: Limiter;
  /** Learns that a repository holds a blob (a mount source for a later push). */
  homes: BlobHomes;
  /** Names a network failure once resuming gives up (NETWORK_ERROR with the registry's hint). */
  networkError: (repo: Repository, what: string, err: unknown) => unknown;
  /** Times a whole blob is fetched again after failing its digest (downloadBlob; default 3 tries). */
  attempts?: number;
}

export class BlobDownload {
  constructor(private readonly options: BlobDownloadOptions) {}

  /** GET a blob from `offset` (Range), following redirects to blob storage. */
  private openAt(repo: Repository, digest: Digest, offset: number, signal: AbortSignal | undefined): Promise<HttpResponse> {
    return this.options.call({
      repo,
      method: 'GET',
      path: repoPath(repo, `blobs/${digest}`),
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      scopes: [repositoryScope(repo.repository, 'pull')],
      what: `get ${blobWhat(repo, digest)}`,
      ok: offset > 0 ? [200, 206] : [200],
      ...(signal ? { signal } : {}),
    });
  }

  /**
   * Stream a blob. A dropped connection is resumed with Range from the byte reached; with
   * `verify` the stream fails at its end unless size and digest match. Holds one download slot
   * until the stream closes.
   */
  async openBlob(repo: Repository, blob: BlobTarget, options: OpenBlobOptions = {}): Promise<Readable> {
    const { signal } = options;
    const verify = options.verify ?? true;
    const what = blobWhat(repo, blob.digest);
    const release = await holdSlot(this.options.slots);
    let first: HttpResponse;
    try {
      first = await this.openAt(repo, blob.digest, 0, signal);
    } catch (err) {
      release();
      throw err;
    }
    this.options.homes.remember(repo, blob.digest);
    const policy = this.options.retry;
    const reopen = (offset: number): Promise<HttpResponse> => this.openAt(repo, blob.digest, offset, signal);
    const wrapNetwork = (err: unknown): unknown => this.options.networkError(repo, `get ${what}`, err);

    async function* chunks(): AsyncGenerator<Buffer> {
      let res: HttpResponse | undefined = first;
      let offset = 0;
      let failures = 0;
      const digester = verify ? new Digester(digestAlgorithm(blob.digest)) : undefined;
      try {
        for (;;) {
          try {
            let skip = 0;
            if (offset > 0) {
              if (res.status === 206) {
                const start = /^bytes (\d+)-/.exec(headerValue(res.headers, 'content-range') ?? '')?.[1];
                if (start === undefined || Number(start) !== offset) {
                  throw new FerryError('REGISTRY_ERROR', `get ${what}: asked to resume at byte ${offset}, the registry answered range "${headerValue(res.headers, 'content-range') ?? ''}"`);
                }
              } else skip = offset; // the server ignored Range: pass over what was already delivered
            }
            for await (const data of res.body as AsyncIterable<Buffer>) {
              let chunk = data;
              if (skip > 0) {
                if (chunk.length <= skip) {
                  skip -= chunk.length;
                  continue;
                }
                chunk = chunk.subarray(skip);
                skip = 0;
              }
              offset += chunk.length;
              if (offset > blob.size) {
                throw new FerryError('SIZE_MISMATCH', `get ${what}: more than the expected ${blob.size} bytes`);
              }
              digester?.update(chunk);
              failures = 0;
              yield chunk;
            }
            if (offset < blob.size) {
              throw Object.assign(new Error(`connection closed at byte ${offset} of ${blob.size}`), { code: 'PREMATURE_END' });
            }
            break;
          } catch (err) {
            res.body.destroy();
            res = undefined;
            if (!isTransient(err) || signal?.aborted) throw err;
            failures++;
            if (failures >= policy.attempts) throw wrapNetwork(err);
            await sleep(retryDelay(policy, failures, err), signal);
            res = await reopen(offset);
          }
        }
        if (digester !== undefined) {
          const actual = digester.digest();
          if (actual !== blob.digest) {
            throw new FerryError('DIGEST_MISMATCH', `get ${what}: digest mismatch: content hashes to ${actual}`, {
              hint: 'the data was corrupted in transit or at rest; fetch it again',
            });
          }
        }
      } finally {
        res?.body.destroy();
      }
    }

    const stream = Readable.from(chunks(), { objectMode: false });
    stream.once('close', release);
    if (signal !== undefined) {
      const onAbort = (): void => {
        stream.destroy(abortError(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      stream.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    return stream;
  }

  /** A whole small blob (an image config) in memory, verified; a corrupted answer is fetched again. */
  async getBlobBytes(repo: Repository, blob: BlobTarget, options: CallOptions = {}): Promise<Buffer> {
    const what = blobWhat(repo, blob.digest);
    if (blob.size > MAX_MANIFEST_BYTES) {
      throw new FerryError('INVALID_MANIFEST', `get ${what}: ${blob.size} bytes is over the ${MAX_MANIFEST_BYTES}-byte limit for configs`);
    }
    const retryIf = (e: unknown): boolean => isFerryError(e, 'DIGEST_MISMATCH');
    return withRetry(this.options.retry, { ...(options.signal ? { signal: options.signal } : {}), retryIf }, async () => {
      const stream = await this.openBlob(repo, blob, options);
      const parts: Buffer[] = [];
      for await (const chunk of stream as AsyncIterable<Buffer>) parts.push(chunk);
      return Buffer.concat(parts);
    });
  }

  /**
   * Download a blob into `path` atomically (io's ingestFile: temp file beside it, size and digest
   * checked while writing, fsync, rename, fsync dir). A blob that arrives complete but fails its
   * digest is fetched again from the start (bounded); bad bytes never reach `path`.
   */
  async downloadBlob(repo: Repository, blob: BlobTarget, path: string, options: CallOptions = {}): Promise<void> {
    const attempts = this.options.attempts ?? 3;
    const what = `get ${blobWhat(repo, blob.digest)}`;
    for (let attempt = 1; ; attempt++) {
      try {
        // ingestFile hashes the bytes as it writes them: the stream need not hash them as well.
        const stream = await this.openBlob(repo, blob, { ...options, verify: false });
        await ingestFile(path, stream, { digest: blob.digest, size: blob.size, what, ...(options.signal ? { signal: options.signal } : {}) });
        return;
      } catch (err) {
        const corrupt = isFerryError(err, 'DIGEST_MISMATCH') || isFerryError(err, 'SIZE_MISMATCH');
        if (!corrupt || attempt >= attempts || options.signal?.aborted) throw err;
        await sleep(backoffDelay(this.options.retry, attempt), options.signal);
      }
    }
  }
}
