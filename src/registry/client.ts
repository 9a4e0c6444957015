import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, isFerryError, messageOf, type ErrorCode } from '../errors.js';
import { syncDir, tempPathFor } from '../io/atomic-file.js';
import { VerifyDigest } from '../io/verify-digest.js';
import { Digester, digestAlgorithm, digestOf, isDigest, type Digest } from '../oci/digest.js';
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.js';
import { formatReference, referenceSelector, type Reference } from '../oci/reference.js';
import { unlimited, type Limiter } from '../oci/limiter.js';
import { Authenticator, parseChallenges, repositoryScope, type Credentials } from './auth.js';
import { lookupCredentials } from './docker-config.js';
import {
  DEFAULT_RETRY,
  RegistryHttpError,
  backoffDelay,
  isTransient,
  parseRetryAfter,
  retryDelay,
  sleep,
  withRetry,
  type RetryPolicy,
} from './retry.js';
import { Transport, abortError, discard, headerValue, readBody, type HttpResponse, type TransportOptions } from './transport.js';

/**
 * RegistryClient: the Distribution API v2 as ferry uses it. Each call is the base transport
 * wrapped in small layers: auth (challenge, token per scope), redirects (never carrying
 * Authorization to another host), and retries of temporary failures. Blobs stream with digest
 * verification, resume after a dropped connection, and are bounded in number by the
 * slots the caller gives (transfer/'s limit).
 */

export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

/** Where a repository lives: `Reference` satisfies it. */
export interface Repository {
  registry: string;
  repository: string;
}

export interface RegistryClientOptions extends TransportOptions {
  /** Credentials per registry; default: docker's config.json and credential helpers. */
  credentials?: (registry: string) => Promise<Credentials | undefined>;
  retry?: Partial<RetryPolicy>;
  /**
   * Slots for blob downloads and for blob uploads, each held until the blob's stream closes
   * (separate, since a push may open a pull of the same client as its source). The limits come
   * from the caller (transfer/concurrencyLimit, as copyImages's own); default: none.
   */
  pullSlots?: Limiter;
  pushSlots?: Limiter;
  /** Push blobs larger than this in PATCH chunks of this size; default: one monolithic PUT. */
  chunkSize?: number;
  /** Times a whole blob is fetched again after failing its digest (downloadBlob; default 3 tries). */
  blobAttempts?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface ManifestResponse {
  digest: Digest;
  mediaType: string;
  raw: Buffer;
}

export interface ManifestHead {
  digest: Digest | undefined;
  mediaType: string | undefined;
  size: number | undefined;
}

export interface BlobTarget {
  digest: Digest;
  size: number;
}

export interface OpenBlobOptions extends CallOptions {
  /** Hash while streaming and fail at the end on a mismatch (default true). */
  verify?: boolean;
}

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

/** What one registry exchange is. */
interface Exchange extends CallOptions {
  repo: Repository;
  method: string;
  /** Path under the API origin (`/v2/...`), or an absolute URL (upload locations). */
  path: string | URL;
  headers?: Record<string, string>;
  body?: Buffer | Readable;
  scopes: readonly string[];
  /** Names the operation in errors: "get manifest 127.0.0.1:5000/ns/app:1". */
  what: string;
  /** Statuses that are answers, not errors. */
  ok: readonly number[];
}

const MAX_REDIRECTS = 5;
const MAX_ERROR_BODY = 64 * 1024;

/** The API host: Docker Hub's API is not at docker.io. */
export function apiHost(registry: string): string {
  return registry === 'docker.io' ? DOCKER_HUB_API_HOST : registry;
}

export class RegistryClient {
  readonly transport: Transport;
  private readonly options: RegistryClientOptions;
  private readonly retry: RetryPolicy;
  // Pulls and pushes have separate slots: a push may open a pull of the same client as its source.
  private readonly pullLimit: Limiter;
  private readonly pushLimit: Limiter;
  private readonly auths = new Map<string, Authenticator>();
  /** Repositories known to hold a blob, per registry: candidates for a cross-repository mount. */
  private readonly blobHomes = new Map<string, Set<string>>();

  constructor(options: RegistryClientOptions = {}) {
    this.options = options;
    this.transport = new Transport(options);
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.pullLimit = options.pullSlots ?? unlimited;
    this.pushLimit = options.pushSlots ?? unlimited;
  }

  close(): void {
    this.transport.close();
  }

  private authFor(registry: string): Authenticator {
    let auth = this.auths.get(registry);
    if (auth === undefined) {
      const provider = this.options.credentials ?? ((r: string) => lookupCredentials(r));
      auth = new Authenticator({ transport: this.transport, registry, credentials: () => provider(registry) });
      this.auths.set(registry, auth);
    }
    return auth;
  }

  private origin(registry: string): string {
    return this.transport.origin(apiHost(registry));
  }

  // ---- layers: send (redirects) -> authorized (401 -> token -> again) -> exchange (errors, retries)

  /** One request, following redirects for GET/HEAD; Authorization goes only to the registry's own origin. */
  private async send(ex: Exchange, authorization: string | undefined): Promise<HttpResponse> {
    const apiOrigin = this.origin(ex.repo.registry);
    let url = typeof ex.path === 'string' ? new URL(ex.path, apiOrigin) : ex.path;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { ...ex.headers };
      if (authorization !== undefined && url.origin === apiOrigin) headers.authorization = authorization;
      const res = await this.transport.request({
        method: ex.method,
        url,
        headers,
        ...(ex.body !== undefined ? { body: ex.body } : {}),
        ...(ex.signal ? { signal: ex.signal } : {}),
      });
      const location = headerValue(res.headers, 'location');
      const redirect = [301, 302, 303, 307, 308].includes(res.status) && location !== undefined;
      if (!redirect || (ex.method !== 'GET' && ex.method !== 'HEAD')) return res;
      discard(res);
      if (hop >= MAX_REDIRECTS) {
        throw new FerryError('REGISTRY_ERROR', `${ex.what}: more than ${MAX_REDIRECTS} redirects`);
      }
      url = new URL(location, url);
    }
  }

  private async authorized(ex: Exchange): Promise<HttpResponse> {
    const auth = this.authFor(ex.repo.registry);
    const res = await this.send(ex, await auth.header(ex.scopes));
    if (res.status !== 401) return res;
    const challenge = headerValue(res.headers, 'www-authenticate');
    const fresh = await auth.refresh(challenge, ex.scopes, ex.signal);
    if (fresh === undefined) return res;
    if (ex.body !== undefined && !Buffer.isBuffer(ex.body)) {
      // A streamed body is spent: the caller starts the upload again with the new token.
      discard(res);
      throw new RegistryHttpError('UNAUTHORIZED', `${ex.what}: authentication expired during the upload`, 401, { retryable: true });
    }
    discard(res);
    return this.send(ex, fresh);
  }

  /** One exchange with error mapping; retried when `retry` (bodies must be replayable then). */
  private async exchange(ex: Exchange, retry = true): Promise<HttpResponse> {
    const once = async (): Promise<HttpResponse> => {
      const res = await this.authorized(ex);
      if (ex.ok.includes(res.status)) return res;
      throw await this.httpError(ex, res);
    };
    const canReplay = ex.body === undefined || Buffer.isBuffer(ex.body);
    try {
      return retry && canReplay ? await withRetry(this.retry, ex.signal ? { signal: ex.signal } : {}, once) : await once();
    } catch (err) {
      throw this.networkError(ex, err);
    }
  }

  /** Node's socket errors become NETWORK_ERROR naming the operation; FerryErrors pass through. */
  private networkError(ex: { what: string; repo: Repository; signal?: AbortSignal }, err: unknown): unknown {
    if (err instanceof FerryError || (err instanceof Error && err.name === 'AbortError')) return err;
    const code = (err as NodeJS.ErrnoException).code;
    const host = apiHost(ex.repo.registry);
    const tls = typeof code === 'string' && (code.startsWith('ERR_TLS') || code.includes('CERT') || code.startsWith('DEPTH_ZERO') || code === 'SELF_SIGNED_CERT_IN_CHAIN');
    return new FerryError('NETWORK_ERROR', `${ex.what}: ${tls ? 'TLS certificate not trusted' : 'cannot reach the registry'}: ${messageOf(err)}${code && !messageOf(err).includes(code) ? ` (${code})` : ''}`, {
      cause: err,
      hint: tls
        ? `pass the registry's CA with --ca-file, or use --insecure-registry ${host} for a plain-HTTP registry`
        : `check that ${host} is up and reachable${this.transport.origin(host).startsWith('https') ? `; for a plain-HTTP registry use --insecure-registry ${host}` : ''}`,
    });
  }

  private async httpError(ex: Exchange, res: HttpResponse): Promise<RegistryHttpError> {
    let detail = '';
    if (ex.method !== 'HEAD') {
      try {
        detail = registryErrorDetail(await readBody(res, MAX_ERROR_BODY, ex.what));
      } catch (err) {
        detail = `(error body unreadable: ${messageOf(err)})`;
      }
    } else discard(res);
    const status = res.status;
    const suffix = detail ? `: ${detail}` : '';
    const registry = ex.repo.registry;
    const retryAfterMs = parseRetryAfter(headerValue(res.headers, 'retry-after'));
    const extra = retryAfterMs === undefined ? {} : { retryAfterMs };
    const make = (code: ErrorCode, why: string, hint?: string): RegistryHttpError =>
      new RegistryHttpError(code, `${ex.what}: ${why} (HTTP ${status}${suffix})`, status, { ...extra, ...(hint ? { hint } : {}) });
    switch (status) {
      case 401: {
        const used = this.authFor(registry).usedCredentials;
        const challenge = parseChallenges(headerValue(res.headers, 'www-authenticate') ?? '')[0];
        if (used && challenge?.params.error === 'insufficient_scope') {
          // Distribution lists the actions in map order: sort them so the message reads the same each time.
          const wanted = (challenge.params.scope ?? ex.scopes.join(' '))
            .split(' ')
            .map((scope) => scope.replace(/:([a-z*,]+)$/, (_m, actions: string) => `:${actions.split(',').sort().join(',')}`))
            .join(' ');
          return make('DENIED', `access denied: the user is not granted ${wanted}`, `log in as a user with that permission: 'ferry login ${registry}'`);
        }
        return used
          ? make('UNAUTHORIZED', 'the registry refused the credentials', `check the user name and password; run 'ferry login ${registry}' again`)
          : make('UNAUTHORIZED', 'authentication is needed', `run 'ferry login ${registry}'`);
      }
      case 403:
        return make('DENIED', 'access denied', `the user lacks permission on ${ex.repo.repository}; check with the registry's administrator`);
      case 404:
        return make('NOT_FOUND', 'not found', 'check the repository name and tag');
      case 429:
        return make('REGISTRY_ERROR', 'too many requests', 'the registry is rate-limiting; try again later');
      default:
        return make('REGISTRY_ERROR', `the registry answered ${status}`);
    }
  }

  private repoPath(repo: Repository, rest: string): string {
    return `/v2/${repo.repository}/${rest}`;
  }

  private remember(repo: Repository, digest: Digest): void {
    const key = `${repo.registry} ${digest}`;
    let homes = this.blobHomes.get(key);
    if (homes === undefined) {
      homes = new Set();
      this.blobHomes.set(key, homes);
    }
    homes.add(repo.repository);
  }

  /** Hold one of the client's blob slots until `release` is called. */
  private acquire(limit: Limiter): Promise<() => void> {
    return new Promise((acquired) => {
      void limit(() => new Promise<void>((release) => acquired(release)));
    });
  }

  // ---- API

  /** GET /v2/: is the registry there, and what authentication does it ask for? */
  async ping(registry: string, options: CallOptions = {}): Promise<{ status: number; challenge: string | undefined }> {
    const repo = { registry, repository: '' };
    const ex: Exchange = { repo, method: 'GET', path: '/v2/', scopes: [], what: `ping ${registry}`, ok: [200, 401], ...options };
    const res = await this.exchange(ex);
    discard(res);
    return { status: res.status, challenge: headerValue(res.headers, 'www-authenticate') };
  }

  /**
   * Check credentials as `docker login` does: /v2/ with Basic, or a token from the realm for
   * the registry's service. Throws UNAUTHORIZED when the registry refuses them.
   */
  async verifyCredentials(registry: string, creds: Credentials, options: CallOptions = {}): Promise<void> {
    const auth = new Authenticator({ transport: this.transport, registry, credentials: () => Promise.resolve(creds) });
    const repo = { registry, repository: '' };
    const ex: Exchange = { repo, method: 'GET', path: '/v2/', scopes: [], what: `log in to ${registry}`, ok: [200], ...options };
    const first = await withRetry(this.retry, options.signal ? { signal: options.signal } : {}, async () => {
      try {
        return await this.send(ex, undefined);
      } catch (err) {
        throw this.networkError(ex, err);
      }
    });
    discard(first);
    if (first.status === 200) return;
    if (first.status !== 401) throw await this.httpError(ex, first);
    let header: string | undefined;
    try {
      header = await auth.refresh(headerValue(first.headers, 'www-authenticate'), [], options.signal);
    } catch (err) {
      if (isFerryError(err, 'UNAUTHORIZED')) {
        throw new FerryError('UNAUTHORIZED', `log in to ${registry}: the registry refused the user name or password`, {
          cause: err,
          hint: 'check the user name and password',
        });
      }
      throw this.networkError(ex, err);
    }
    if (header === undefined) {
      throw new FerryError('UNSUPPORTED', `log in to ${registry}: the registry asks for an authentication scheme ferry does not speak`);
    }
    const second = await this.send(ex, header);
    discard(second);
    if (second.status === 200) return;
    if (second.status === 401) {
      throw new FerryError('UNAUTHORIZED', `log in to ${registry}: the registry refused the user name or password (HTTP 401)`, {
        hint: 'check the user name and password',
      });
    }
    throw await this.httpError(ex, second);
  }

  /** GET a manifest or index by tag or digest; a by-digest answer is checked against its digest. */
  async getManifest(ref: Reference, options: CallOptions = {}): Promise<ManifestResponse> {
    const selector = referenceSelector(ref);
    const what = `get manifest ${formatReference(ref)}`;
    const ex: Exchange = {
      repo: ref,
      method: 'GET',
      path: this.repoPath(ref, `manifests/${selector}`),
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      scopes: [repositoryScope(ref.repository, 'pull')],
      what,
      ok: [200],
      ...options,
    };
    // A corrupted or cut-off answer is fetched again (bounded); the exchange itself retried the rest.
    const retryIf = (e: unknown): boolean => isFerryError(e, 'DIGEST_MISMATCH') || (!(e instanceof FerryError) && isTransient(e));
    const fetched = withRetry(this.retry, { ...(options.signal ? { signal: options.signal } : {}), retryIf }, async () => {
      const res = await this.exchange(ex);
      const raw = await readBody(res, MAX_MANIFEST_BYTES, what);
      const contentType = headerValue(res.headers, 'content-type');
      const served = headerValue(res.headers, 'docker-content-digest');
      let digest: Digest;
      if (ref.digest !== undefined) {
        digest = ref.digest;
        const actual = digestOf(raw, digestAlgorithm(ref.digest));
        if (actual !== ref.digest) {
          throw new FerryError('DIGEST_MISMATCH', `${what}: the manifest served hashes to ${actual}`, {
            hint: 'the registry or something between served other bytes than the digest names',
          });
        }
      } else {
        digest = digestOf(raw);
        if (served !== undefined && isDigest(served) && digestAlgorithm(served) === 'sha256' && served !== digest) {
          throw new FerryError('DIGEST_MISMATCH', `${what}: the registry says ${served} but the bytes hash to ${digest}`);
        }
      }
      const parsed = parseManifest(raw, contentType, `manifest ${digest} of ${formatReference(ref)}`);
      return { digest, mediaType: parsed.mediaType, raw };
    });
    return fetched.catch((err: unknown) => {
      throw this.networkError(ex, err);
    });
  }

  /** HEAD a manifest: its digest, type and size, or undefined when there is none. */
  async headManifest(ref: Reference, options: CallOptions = {}): Promise<ManifestHead | undefined> {
    const res = await this.exchange({
      repo: ref,
      method: 'HEAD',
      path: this.repoPath(ref, `manifests/${referenceSelector(ref)}`),
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      scopes: [repositoryScope(ref.repository, 'pull')],
      what: `check manifest ${formatReference(ref)}`,
      ok: [200, 404],
      ...options,
    });
    discard(res);
    if (res.status === 404) return undefined;
    const d = headerValue(res.headers, 'docker-content-digest');
    const len = Number(headerValue(res.headers, 'content-length'));
    return {
      digest: d !== undefined && isDigest(d) ? d : undefined,
      mediaType: headerValue(res.headers, 'content-type')?.split(';')[0]?.trim(),
      size: Number.isFinite(len) ? len : undefined,
    };
  }

  /** HEAD a blob: its size, or undefined when the repository does not have it. */
  async headBlob(repo: Repository, digest: Digest, options: CallOptions & { push?: boolean } = {}): Promise<number | undefined> {
    const res = await this.exchange({
      repo,
      method: 'HEAD',
      path: this.repoPath(repo, `blobs/${digest}`),
      scopes: [repositoryScope(repo.repository, options.push ? 'pull,push' : 'pull')],
      what: `check blob ${digest} in ${repo.registry}/${repo.repository}`,
      ok: [200, 404],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    discard(res);
    if (res.status === 404) return undefined;
    this.remember(repo, digest);
    const len = Number(headerValue(res.headers, 'content-length'));
    return Number.isFinite(len) ? len : 0;
  }

  private blobWhat(repo: Repository, digest: Digest): string {
    return `blob ${digest} of ${repo.registry}/${repo.repository}`;
  }

  /** GET a blob from `offset` (Range), following redirects to blob storage. */
  private async openBlobAt(repo: Repository, digest: Digest, offset: number, signal: AbortSignal | undefined): Promise<HttpResponse> {
    return this.exchange({
      repo,
      method: 'GET',
      path: this.repoPath(repo, `blobs/${digest}`),
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      scopes: [repositoryScope(repo.repository, 'pull')],
      what: `get ${this.blobWhat(repo, digest)}`,
      ok: offset > 0 ? [200, 206] : [200],
      ...(signal ? { signal } : {}),
    });
  }

  /**
   * Stream a blob. A dropped connection is resumed with Range from the byte reached (hashing
   * continues across the resume); with `verify` the stream fails at its end unless size and
   * digest match. Holds one of the client's transfer slots until the stream closes.
   */
  async openBlob(repo: Repository, blob: BlobTarget, options: OpenBlobOptions = {}): Promise<Readable> {
    const { signal } = options;
    const verify = options.verify ?? true;
    const what = this.blobWhat(repo, blob.digest);
    const release = await this.acquire(this.pullLimit);
    let first: HttpResponse;
    try {
      first = await this.openBlobAt(repo, blob.digest, 0, signal);
    } catch (err) {
      release();
      throw err;
    }
    this.remember(repo, blob.digest);
    const policy = this.retry;
    const reopen = (offset: number): Promise<HttpResponse> => this.openBlobAt(repo, blob.digest, offset, signal);
    const wrapNetwork = (err: unknown): unknown => this.networkError({ what: `get ${what}`, repo }, err);

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
    const what = this.blobWhat(repo, blob.digest);
    if (blob.size > MAX_MANIFEST_BYTES) {
      throw new FerryError('INVALID_MANIFEST', `get ${what}: ${blob.size} bytes is over the ${MAX_MANIFEST_BYTES}-byte limit for configs`);
    }
    const retryIf = (e: unknown): boolean => isFerryError(e, 'DIGEST_MISMATCH');
    return withRetry(this.retry, { ...(options.signal ? { signal: options.signal } : {}), retryIf }, async () => {
      const stream = await this.openBlob(repo, blob, options);
      const parts: Buffer[] = [];
      for await (const chunk of stream as AsyncIterable<Buffer>) parts.push(chunk);
      return Buffer.concat(parts);
    });
  }

  /**
   * Download a blob into `path` atomically. A blob that arrives complete but fails its digest
   * is fetched again from the start (bounded); bad bytes never reach `path`.
   */
  async downloadBlob(repo: Repository, blob: BlobTarget, path: string, options: CallOptions = {}): Promise<void> {
    const attempts = this.options.blobAttempts ?? 3;
    for (let attempt = 1; ; attempt++) {
      const tmp = tempPathFor(path);
      try {
        const stream = await this.openBlob(repo, blob, options);
        await pipeline(stream, createWriteStream(tmp, { flags: 'wx', mode: 0o644, flush: true }), options.signal ? { signal: options.signal } : {});
        await rename(tmp, path);
        await syncDir(dirname(path));
        return;
      } catch (err) {
        await rm(tmp, { force: true });
        const corrupt = isFerryError(err, 'DIGEST_MISMATCH') || isFerryError(err, 'SIZE_MISMATCH');
        if (!corrupt || attempt >= attempts || options.signal?.aborted) throw err;
        await sleep(backoffDelay(this.retry, attempt), options.signal);
      }
    }
  }

  /** List a repository's tags, following the Link header's pages. */
  async listTags(repo: Repository, options: CallOptions = {}): Promise<string[]> {
    const tags: string[] = [];
    let path: string | URL = this.repoPath(repo, 'tags/list?n=1000');
    const what = `list tags of ${repo.registry}/${repo.repository}`;
    for (let page = 0; page < 1000; page++) {
      const res = await this.exchange({ repo, method: 'GET', path, scopes: [repositoryScope(repo.repository, 'pull')], what, ok: [200], ...options });
      const body = await readBody(res, MAX_MANIFEST_BYTES, what);
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch (err) {
        throw new FerryError('REGISTRY_ERROR', `${what}: the answer is not JSON`, { cause: err });
      }
      const list = (parsed as { tags?: unknown }).tags;
      if (Array.isArray(list)) for (const t of list) if (typeof t === 'string') tags.push(t);
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(headerValue(res.headers, 'link') ?? '')?.[1];
      if (next === undefined) break;
      path = new URL(next, this.origin(repo.registry));
    }
    return tags;
  }

  // ---- push

  private pushScopes(repo: Repository, from?: string): string[] {
    const scopes = [repositoryScope(repo.repository, 'pull,push')];
    if (from !== undefined) scopes.push(repositoryScope(from, 'pull'));
    return scopes;
  }

  private uploadUrl(res: HttpResponse, repo: Repository, what: string): URL {
    const location = headerValue(res.headers, 'location');
    if (location === undefined) throw new FerryError('REGISTRY_ERROR', `${what}: the registry gave no upload location`);
    return new URL(location, this.origin(repo.registry));
  }

  /**
   * Try a cross-repository mount of `digest` from `from`. True when mounted; otherwise the
   * upload session the registry opened instead (or undefined).
   */
  async mountBlob(repo: Repository, digest: Digest, from: string, options: CallOptions = {}): Promise<{ mounted: boolean; upload: URL | undefined }> {
    const ex: Exchange = {
      repo,
      method: 'POST',
      path: `${this.repoPath(repo, 'blobs/uploads/')}?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`,
      scopes: this.pushScopes(repo, from),
      what: `mount blob ${digest} from ${from} into ${repo.registry}/${repo.repository}`,
      ok: [201, 202],
      ...options,
    };
    const res = await this.exchange(ex);
    discard(res);
    if (res.status === 201) {
      this.remember(repo, digest);
      return { mounted: true, upload: undefined };
    }
    return { mounted: false, upload: this.uploadUrl(res, repo, ex.what) };
  }

  private async startUpload(repo: Repository, digest: Digest, options: CallOptions): Promise<URL> {
    const ex: Exchange = {
      repo,
      method: 'POST',
      path: this.repoPath(repo, 'blobs/uploads/'),
      scopes: this.pushScopes(repo),
      what: `start upload of blob ${digest} to ${repo.registry}/${repo.repository}`,
      ok: [202],
      ...options,
    };
    const res = await this.exchange(ex);
    discard(res);
    return this.uploadUrl(res, repo, ex.what);
  }

  /**
   * Push a blob unless the repository has it: HEAD, then a cross-repository mount from a
   * repository known to hold it, then a monolithic PUT or chunked PATCHes. `open` is called
   * again for each try; the bytes are verified as they go, so bad bytes are never committed.
   */
  async pushBlob(repo: Repository, blob: BlobTarget, open: (signal?: AbortSignal) => Promise<Readable>, options: PushBlobOptions = {}): Promise<PushBlobResult> {
    const { signal } = options;
    const call = signal ? { signal } : {};
    const release = await this.acquire(this.pushLimit);
    try {
      if ((await this.headBlob(repo, blob.digest, { ...call, push: true })) !== undefined) return 'exists';
      const known = this.blobHomes.get(`${repo.registry} ${blob.digest}`) ?? new Set<string>();
      const candidates = [...new Set([...(options.mountFrom ?? []), ...known])].filter((r) => r !== repo.repository).slice(0, 3);
      let upload: URL | undefined;
      for (const from of candidates) {
        const m = await this.mountBlob(repo, blob.digest, from, call);
        if (m.mounted) return 'mounted';
        upload = m.upload;
        break; // the registry opened an upload session instead: use it
      }
      const chunkSize = options.chunkSize ?? this.options.chunkSize;
      await withRetry(this.retry, call, async () => {
        const location = upload ?? (await this.startUpload(repo, blob.digest, call));
        upload = undefined; // a failed session is not reused
        const source = await open(signal);
        const verified = source.pipe(new VerifyDigest(blob.digest, { size: blob.size, what: `push ${this.blobWhat(repo, blob.digest)}` }));
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
      this.remember(repo, blob.digest);
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
  async pushBlobStream(repo: Repository, open: (signal?: AbortSignal) => Promise<Readable>, options: CallOptions = {}): Promise<StreamedBlobResult> {
    const { signal } = options;
    const call = signal ? { signal } : {};
    const what = `upload a streamed blob to ${repo.registry}/${repo.repository}`;
    const release = await this.acquire(this.pushLimit);
    try {
      let known: BlobTarget | undefined;
      const result = await withRetry(this.retry, call, async (): Promise<PushBlobResult> => {
        if (known !== undefined && (await this.headBlob(repo, known.digest, { ...call, push: true })) !== undefined) return 'exists';
        const started = await this.exchange({ repo, method: 'POST', path: this.repoPath(repo, 'blobs/uploads/'), scopes: this.pushScopes(repo), what: `start ${what}`, ok: [202], ...call });
        discard(started);
        const location = this.uploadUrl(started, repo, what);
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
          const res = await this.exchange(
            { repo, method: 'PATCH', path: location, headers: { 'content-type': 'application/octet-stream' }, body: counted, scopes: this.pushScopes(repo), what, ok: [202, 204], ...call },
            false,
          );
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
        const done = new URL(next);
        done.searchParams.set('digest', pass.digest);
        const finishWhat = this.finishWhat(repo, pass.digest);
        const res = await this.exchange(
          { repo, method: 'PUT', path: done, headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(0), scopes: this.pushScopes(repo), what: finishWhat, ok: [201, 204], ...call },
          false,
        );
        discard(res);
        this.checkCommitted(res, pass.digest, finishWhat);
        return 'uploaded';
      });
      const blob = known!;
      this.remember(repo, blob.digest);
      return { digest: blob.digest, size: blob.size, result };
    } finally {
      release();
    }
  }

  private finishWhat(repo: Repository, digest: Digest): string {
    return `upload blob ${digest} to ${repo.registry}/${repo.repository}`;
  }

  private async uploadMonolithic(repo: Repository, blob: BlobTarget, location: URL, body: Readable, call: CallOptions): Promise<void> {
    const url = new URL(location);
    url.searchParams.set('digest', blob.digest);
    const res = await this.exchange(
      {
        repo,
        method: 'PUT',
        path: url,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
        body,
        scopes: this.pushScopes(repo),
        what: this.finishWhat(repo, blob.digest),
        ok: [201, 204],
        ...call,
      },
      false,
    );
    discard(res);
    this.checkCommitted(res, blob.digest, this.finishWhat(repo, blob.digest));
  }

  /** PATCH the blob in `chunkSize` pieces (each streamed, never held whole), then PUT ?digest=. */
  private async uploadChunked(repo: Repository, blob: BlobTarget, location: URL, body: Readable, chunkSize: number, call: CallOptions): Promise<void> {
    const iterator = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    let leftover: Buffer | undefined;
    let url = location;
    const what = this.finishWhat(repo, blob.digest);
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
      const res = await this.exchange(
        {
          repo,
          method: 'PATCH',
          path: url,
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(length),
            'content-range': `${start}-${start + length - 1}`,
          },
          body: Readable.from(piece(), { objectMode: false }),
          scopes: this.pushScopes(repo),
          what: `${what} (bytes ${start}-${start + length - 1})`,
          ok: [202, 204],
          ...call,
        },
        false,
      );
      discard(res);
      url = this.uploadUrl(res, repo, what);
    }
    // Drain to the end so VerifyDigest checks the digest before the upload is committed.
    if (leftover !== undefined && leftover.length > 0) throw new FerryError('SIZE_MISMATCH', `${what}: the source has more than ${blob.size} bytes`);
    const end = await iterator.next();
    if (end.done !== true) throw new FerryError('SIZE_MISMATCH', `${what}: the source has more than ${blob.size} bytes`);
    const done = new URL(url);
    done.searchParams.set('digest', blob.digest);
    const res = await this.exchange(
      { repo, method: 'PUT', path: done, headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(0), scopes: this.pushScopes(repo), what, ok: [201, 204], ...call },
      false,
    );
    discard(res);
    this.checkCommitted(res, blob.digest, what);
  }

  private checkCommitted(res: HttpResponse, digest: Digest, what: string): void {
    const served = headerValue(res.headers, 'docker-content-digest');
    if (served !== undefined && isDigest(served) && digestAlgorithm(served) === digestAlgorithm(digest) && served !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `${what}: the registry stored ${served}`);
    }
  }

  /** PUT a manifest or index under a tag or digest, with its media type; returns its digest. */
  async putManifest(ref: Reference, raw: Buffer, mediaType: string, options: CallOptions = {}): Promise<Digest> {
    const digest = digestOf(raw);
    const what = `put manifest ${digest} as ${formatReference(ref)}`;
    if (ref.digest !== undefined && ref.digest !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `${what}: the manifest bytes hash to ${digest}, not ${ref.digest}`);
    }
    const res = await this.exchange({
      repo: ref,
      method: 'PUT',
      path: this.repoPath(ref, `manifests/${referenceSelector(ref)}`),
      headers: { 'content-type': mediaType },
      body: raw,
      scopes: this.pushScopes(ref),
      what,
      ok: [201, 200, 204],
      ...options,
    });
    discard(res);
    this.checkCommitted(res, digest, what);
    return digest;
  }
}

/** `CODE: message` of a registry's error body (`{"errors":[{"code","message"}]}`), else a short text. */
export function registryErrorDetail(body: Buffer): string {
  const text = body.toString('utf8').trim();
  if (text === '') return '';
  try {
    const v = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    if (Array.isArray(v.errors) && v.errors.length > 0) {
      return v.errors
        .slice(0, 3)
        .map((e) => [typeof e.code === 'string' ? e.code : '', typeof e.message === 'string' ? e.message : ''].filter((x) => x !== '').join(' '))
        .join('; ');
    }
  } catch {
    // not JSON: fall through to the plain text
  }
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}
