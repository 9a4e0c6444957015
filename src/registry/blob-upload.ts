import { Readable, Transform } from 'node:stream';
import { FerryError } from '../errors.js';
import { VerifyDigest } from '../io/verify-digest.js';
import { Digester, digestAlgorithm, isDigest, type Digest } from '../oci/digest.js';
import type { Limiter } from '../oci/limiter.js';
import { blobWhat, holdSlot, pushScopes, repoPath, type BlobHomes, type BlobTarget, type CallOptions, type RegistryCall, type Repository } from './exchange.js';
import { withRetry, type RetryPolicy } from './retry.js';
import { discard, headerValue, type HttpResponse } from './transport.js';

/**
 * Blob upload: skip a blob the repository has, mount it from another repository of the registry,
 * else POST a session and send it monolithic (one PUT) or in PATCH chunks, verified as it goes
 * so bad bytes are never committed. A streamed body cannot be sent twice: a failed upload is
 * started again from `open` (with a new session) by this file's own retry, never by the layer's.
 */

export interface PushBlobOptions extends CallOptions {
  /** Repositories of the same registry to try a cross-repository mount from. */
  mountFrom?: readonly string[];
  /** Overrides the client's chunkSize for this blob. */
  chunkSize?: number;
}

export type PushBlobResult = 'exists' | 'mounted' | 'uploaded';

/** What a streamed push found out: the blob's digest and size, and whether it was sent. */
export interface StreamedBlobResult {
  digest: Digest;
  size: number;
  result: PushBlobResult;
}

export type OpenSource = (signal?: AbortSignal) => Promise<Readable>;

export interface BlobUploadOptions {
  /** The registry's layered exchange. */
  call: RegistryCall;
  retry: RetryPolicy;
  /** Upload slots (the caller's limit). */
  slots: Limiter;
  /** Where blobs were seen (mount sources); told about every blob that lands. */
  homes: BlobHomes;
  /** HEAD a blob with push scope: its size, or undefined when the repository lacks it. */
  headBlob: (repo: Repository, digest: Digest, options: CallOptions) => Promise<number | undefined>;
  /** The registry's API origin, against which relative upload locations resolve. */
  origin: (registry: string) => string;
  /** Push blobs larger than this in PATCH chunks of this size; default: one monolithic PUT. */
  chunkSize?: number;
}

export class BlobUpload {
  constructor(private readonly options: BlobUploadOptions) {}

  private uploadUrl(res: HttpResponse, repo: Repository, what: string): URL {
    const location = headerValue(res.headers, 'location');
    if (location === undefined) throw new FerryError('REGISTRY_ERROR', `${what}: the registry gave no upload location`);
    return new URL(location, this.options.origin(repo.registry));
  }

  /**
   * Try a cross-repository mount of `digest` from `from`. True when mounted; otherwise the
   * upload session the registry opened instead (or undefined).
   */
  async mountBlob(repo: Repository, digest: Digest, from: string, options: CallOptions = {}): Promise<{ mounted: boolean; upload: URL | undefined }> {
    const what = `mount blob ${digest} from ${from} into ${repo.registry}/${repo.repository}`;
    const res = await this.options.call({
      repo,
      method: 'POST',
      path: `${repoPath(repo, 'blobs/uploads/')}?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`,
      scopes: pushScopes(repo, from),
      what,
      ok: [201, 202],
      ...options,
    });
    discard(res);
    if (res.status === 201) {
      this.options.homes.remember(repo, digest);
      return { mounted: true, upload: undefined };
    }
    return { mounted: false, upload: this.uploadUrl(res, repo, what) };
  }

  private async startUpload(repo: Repository, what: string, options: CallOptions): Promise<URL> {
    const res = await this.options.call({ repo, method: 'POST', path: repoPath(repo, 'blobs/uploads/'), scopes: pushScopes(repo), what, ok: [202], ...options });
    discard(res);
    return this.uploadUrl(res, repo, what);
  }

  /**
   * Push a blob unless the repository has it: HEAD, then a cross-repository mount from a
   * repository known to hold it, then a monolithic PUT or chunked PATCHes. `open` is called
   * again for each try; the bytes are verified as they go, so bad bytes are never committed.
   */
  async pushBlob(repo: Repository, blob: BlobTarget, open: OpenSource, options: PushBlobOptions = {}): Promise<PushBlobResult> {
    const { signal } = options;
    const call = signal ? { signal } : {};
    const release = await holdSlot(this.options.slots);
    try {
      if ((await this.options.headBlob(repo, blob.digest, call)) !== undefined) return 'exists';
      const known = this.options.homes.of(repo.registry, blob.digest);
      const candidates = [...new Set([...(options.mountFrom ?? []), ...known])].filter((r) => r !== repo.repository).slice(0, 3);
      let upload: URL | undefined;
      for (const from of candidates) {
        const m = await this.mountBlob(repo, blob.digest, from, call);
        if (m.mounted) return 'mounted';
        upload = m.upload;
        break; // the registry opened an upload session instead: use it
      }
      const chunkSize = options.chunkSize ?? this.options.chunkSize;
      await withRetry(this.options.retry, call, async () => {
        const location = upload ?? (await this.startUpload(repo, `start upload of blob ${blob.digest} to ${repo.registry}/${repo.repository}`, call));
        upload = undefined; // a failed session is not reused
        const source = await open(signal);
        const verified = source.pipe(new VerifyDigest(blob.digest, { size: blob.size, what: `push ${blobWhat(repo, blob.digest)}` }));
        source.on('error', (err) => verified.destroy(err));
        try {
          if (chunkSize !== undefined && chunkSize > 0 && blob.size > chunkSize) {
            await this.uploadChunked(repo, blob, location, verified, chunkSize, call);
          } else {
            await this.uploadMonolithic(repo, blob, location, verified, call);
          }
        } finally {
          source.destroy();
          verified.destroy();
        }
      });
      this.options.homes.remember(repo, blob.digest);
      return 'uploaded';
    } finally {
      release();
    }
  }

  /**
   * Push a blob whose digest is known only once its last byte has passed (a layer compressed on
   * the way): POST, one streamed PATCH (chunked, no length), then PUT ?digest= with the digest
   * hashed while sending. On a temporary failure `open` is called again and must give the same
   * bytes (a spool replays them); after one whole pass the digest is known, so a retry first
   * checks whether the blob is there already.
   */
  async pushBlobStream(repo: Repository, open: OpenSource, options: CallOptions = {}): Promise<StreamedBlobResult> {
    const { signal } = options;
    const call = signal ? { signal } : {};
    const what = `upload a streamed blob to ${repo.registry}/${repo.repository}`;
    const release = await holdSlot(this.options.slots);
    try {
      let known: BlobTarget | undefined;
      const result = await withRetry(this.options.retry, call, async (): Promise<PushBlobResult> => {
        if (known !== undefined && (await this.options.headBlob(repo, known.digest, call)) !== undefined) return 'exists';
        const location = await this.startUpload(repo, `start ${what}`, call);
        const source = await open(signal);
        const digester = new Digester();
        const counted = new Transform({
          transform(chunk: Buffer, _enc, done): void {
            digester.update(chunk);
            done(null, chunk);
          },
        });
        source.on('error', (err) => counted.destroy(err));
        source.pipe(counted);
        let next: URL;
        try {
          const res = await this.options.call({
            repo,
            method: 'PATCH',
            path: location,
            headers: { 'content-type': 'application/octet-stream' },
            body: counted,
            scopes: pushScopes(repo),
            what,
            ok: [202, 204],
            retry: false,
            ...call,
          });
          discard(res);
          next = this.uploadUrl(res, repo, what);
          // The registry answers after the last chunk, so the hash is complete; check anyway.
          if (!counted.readableEnded) throw new FerryError('REGISTRY_ERROR', `${what}: the registry answered before the upload ended`);
        } finally {
          source.destroy();
          counted.destroy();
        }
        const pass: BlobTarget = { digest: digester.digest(), size: digester.size };
        if (known !== undefined && (known.digest !== pass.digest || known.size !== pass.size)) {
          throw new FerryError('DIGEST_MISMATCH', `${what}: the source gave ${pass.digest} (${pass.size} bytes) on a retry, ${known.digest} (${known.size} bytes) before`);
        }
        known = pass;
        await this.commit(repo, next, pass.digest, call);
        return 'uploaded';
      });
      const blob = known!;
      this.options.homes.remember(repo, blob.digest);
      return { digest: blob.digest, size: blob.size, result };
    } finally {
      release();
    }
  }

  /** PUT ?digest= with no body: the session becomes the blob. Not retried: a session commits once. */
  private commit(repo: Repository, location: URL, digest: Digest, call: CallOptions): Promise<void> {
    return this.finish(repo, location, digest, { 'content-type': 'application/octet-stream' }, Buffer.alloc(0), call);
  }

  private uploadMonolithic(repo: Repository, blob: BlobTarget, location: URL, body: Readable, call: CallOptions): Promise<void> {
    return this.finish(repo, location, blob.digest, { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) }, body, call);
  }

  /** The upload's last request, PUT ?digest=DIGEST (with the bytes, or none after PATCHes); never retried. */
  private async finish(repo: Repository, location: URL, digest: Digest, headers: Record<string, string>, body: Buffer | Readable, call: CallOptions): Promise<void> {
    const url = new URL(location);
    url.searchParams.set('digest', digest);
    const what = finishWhat(repo, digest);
    const res = await this.options.call({ repo, method: 'PUT', path: url, headers, body, scopes: pushScopes(repo), what, ok: [201, 204], retry: false, ...call });
    discard(res);
    checkCommitted(res, digest, what);
  }

  /** PATCH the blob in `chunkSize` pieces (each streamed, never held whole), then PUT ?digest=. */
  private async uploadChunked(repo: Repository, blob: BlobTarget, location: URL, body: Readable, chunkSize: number, call: CallOptions): Promise<void> {
    const iterator = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    let leftover: Buffer | undefined;
    let url = location;
    const what = finishWhat(repo, blob.digest);
    for (let start = 0; start < blob.size; start += chunkSize) {
      const length = Math.min(chunkSize, blob.size - start);
      async function* piece(): AsyncGenerator<Buffer> {
        let remaining = length;
        while (remaining > 0) {
          let chunk = leftover;
          leftover = undefined;
          if (chunk === undefined) {
            const next = await iterator.next();
            if (next.done === true) throw new FerryError('SIZE_MISMATCH', `${what}: the source ended at byte ${start + length - remaining} of ${blob.size}`);
            chunk = next.value;
          }
          if (chunk.length > remaining) {
            leftover = chunk.subarray(remaining);
            chunk = chunk.subarray(0, remaining);
          }
          remaining -= chunk.length;
          yield chunk;
        }
      }
      const res = await this.options.call({
        repo,
        method: 'PATCH',
        path: url,
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(length),
          'content-range': `${start}-${start + length - 1}`,
        },
        body: Readable.from(piece(), { objectMode: false }),
        scopes: pushScopes(repo),
        what: `${what} (bytes ${start}-${start + length - 1})`,
        ok: [202, 204],
        retry: false,
        ...call,
      });
      discard(res);
      url = this.uploadUrl(res, repo, what);
    }
    // Drain to the end so VerifyDigest checks the digest before the upload is committed.
    if (leftover !== undefined && leftover.length > 0) throw new FerryError('SIZE_MISMATCH', `${what}: the source has more than ${blob.size} bytes`);
    const end = await iterator.next();
    if (end.done !== true) throw new FerryError('SIZE_MISMATCH', `${what}: the source has more than ${blob.size} bytes`);
    await this.commit(repo, url, blob.digest, call);
  }
}

function finishWhat(repo: Repository, digest: Digest): string {
  return `upload blob ${digest} to ${repo.registry}/${repo.repository}`;
}

/** A registry that names another digest for what it stored has stored other bytes. */
export function checkCommitted(res: HttpResponse, digest: Digest, what: string): void {
  const served = headerValue(res.headers, 'docker-content-digest');
  if (served !== undefined && isDigest(served) && digestAlgorithm(served) === digestAlgorithm(digest) && served !== digest) {
    throw new FerryError('DIGEST_MISMATCH', `${what}: the registry stored ${served}`);
  }
}
