import type { Readable } from 'node:stream';
import { FerryError, isFerryError } from '../errors.js';
import { digestAlgorithm, digestOf, isDigest, type Digest } from '../oci/digest.js';
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.js';
import { formatReference, referenceSelector, type Reference } from '../oci/reference.js';
import { unlimited, type Limiter } from '../oci/limiter.js';
import { Authenticator, repositoryScope, type Credentials } from './auth.js';
import { BlobDownload, type OpenBlobOptions } from './blob-download.js';
import { BlobUpload, checkCommitted, type PushBlobOptions, type PushBlobResult, type StreamedBlobResult } from './blob-upload.js';
import { lookupCredentials } from './docker-config.js';
import { apiHost, BlobHomes, pushScopes, repoPath, type BlobTarget, type CallOptions, type RegistryExchange, type Repository } from './exchange.js';
import { authenticate } from './http/authenticate.js';
import { checkStatus, registryFailure, type DescribeFailure } from './http/check-status.js';
import { nameNetworkErrors, networkError, type RegistryHost } from './http/network-errors.js';
import { followRedirects } from './http/redirects.js';
import { baseRequest, type Exchange, type Send } from './http/request.js';
import { retrying } from './http/retry.js';
import { DEFAULT_RETRY, isTransient, withRetry, type RetryPolicy } from './retry.js';
import { Transport, discard, headerValue, readBody, type HttpResponse, type TransportOptions } from './transport.js';

/**
 * RegistryClient: the Distribution API v2 as ferry uses it. Every call goes through one
 * registry's stack of layers (http/): the base request, redirects (never carrying Authorization
 * to another host), auth (challenge, token per scope), status -> error, retries of temporary
 * failures, network errors named. Blobs stream through blob-download.ts (verified, resumed) and
 * blob-upload.ts (mount, monolithic or chunked, verified before commit), bounded in number by the
 * slots the caller gives (transfer/'s limit). This file keeps manifests, tags and the wiring.
 */

export { DOCKER_HUB_API_HOST, apiHost, type BlobTarget, type CallOptions, type Repository } from './exchange.js';
export type { OpenBlobOptions } from './blob-download.js';
export type { PushBlobOptions, PushBlobResult, StreamedBlobResult } from './blob-upload.js';
export { registryErrorDetail } from './http/check-status.js';

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

export class RegistryClient {
  readonly transport: Transport;
  private readonly options: RegistryClientOptions;
  private readonly retry: RetryPolicy;
  private readonly auths = new Map<string, Authenticator>();
  /** Each registry's stack of layers, built on first use. */
  private readonly stacks = new Map<string, Send>();
  /** Repositories known to hold a blob, per registry: candidates for a cross-repository mount. */
  private readonly homes = new BlobHomes();
  private readonly downloads: BlobDownload;
  private readonly uploads: BlobUpload;

  constructor(options: RegistryClientOptions = {}) {
    this.options = options;
    this.transport = new Transport(options);
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    const call = (ex: RegistryExchange): Promise<HttpResponse> => this.call(ex);
    // Pulls and pushes have separate slots: a push may open a pull of the same client as its source.
    this.downloads = new BlobDownload({
      call,
      retry: this.retry,
      slots: options.pullSlots ?? unlimited,
      homes: this.homes,
      networkError: (repo, what, err) => networkError(what, this.hostOf(repo.registry), err),
      ...(options.blobAttempts !== undefined ? { attempts: options.blobAttempts } : {}),
    });
    this.uploads = new BlobUpload({
      call,
      retry: this.retry,
      slots: options.pushSlots ?? unlimited,
      homes: this.homes,
      headBlob: (repo, digest, o) => this.headBlob(repo, digest, { ...o, push: true }),
      origin: (registry) => this.origin(registry),
      ...(options.chunkSize !== undefined ? { chunkSize: options.chunkSize } : {}),
    });
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

  private hostOf(registry: string): RegistryHost {
    const host = apiHost(registry);
    return { host, tls: this.transport.origin(host).startsWith('https') };
  }

  private describeFailure(registry: string, auth: Authenticator): DescribeFailure {
    return registryFailure({ registry, usedCredentials: () => auth.usedCredentials });
  }

  /** request <- redirects <- authenticate <- check status <- retry <- network errors, for one registry. */
  private stackFor(registry: string): Send {
    let stack = this.stacks.get(registry);
    if (stack === undefined) {
      const auth = this.authFor(registry);
      const redirected = followRedirects(baseRequest(this.transport));
      const authenticated = authenticate(redirected, { authenticator: auth, origin: this.origin(registry) });
      const checked = checkStatus(authenticated, this.describeFailure(registry, auth));
      stack = nameNetworkErrors(retrying(checked, this.retry), this.hostOf(registry));
      this.stacks.set(registry, stack);
    }
    return stack;
  }

  private toExchange(ex: RegistryExchange): Exchange {
    const { repo, path, ...rest } = ex;
    const url = typeof path === 'string' ? new URL(path, this.origin(repo.registry)) : path;
    return { ...rest, url, repository: repo.repository };
  }

  /** One exchange through the registry's layers. */
  private call(ex: RegistryExchange): Promise<HttpResponse> {
    return this.stackFor(ex.repo.registry)(this.toExchange(ex));
  }

  // ---- API

  /** GET /v2/: is the registry there, and what authentication does it ask for? */
  async ping(registry: string, options: CallOptions = {}): Promise<{ status: number; challenge: string | undefined }> {
    const repo = { registry, repository: '' };
    const ex: RegistryExchange = { repo, method: 'GET', path: '/v2/', scopes: [], what: `ping ${registry}`, ok: [200, 401], ...options };
    const res = await this.call(ex);
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
    const ex: RegistryExchange = { repo, method: 'GET', path: '/v2/', scopes: [], what: `log in to ${registry}`, ok: [200], ...options };
    // No auth layer: this checks the credentials given, not the ones on file. Network errors are
    // named before the retry, so a name that does not resolve is tried again too (as always here).
    const plain = followRedirects(baseRequest(this.transport));
    const first = await withRetry(this.retry, options.signal ? { signal: options.signal } : {}, () =>
      nameNetworkErrors(plain, this.hostOf(registry))(this.toExchange(ex)),
    );
    discard(first);
    if (first.status === 200) return;
    if (first.status !== 401) throw await this.describeFailure(registry, auth)(this.toExchange(ex), first);
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
      throw networkError(ex.what, this.hostOf(registry), err);
    }
    if (header === undefined) {
      throw new FerryError('UNSUPPORTED', `log in to ${registry}: the registry asks for an authentication scheme ferry does not speak`);
    }
    const second = await plain(this.toExchange({ ...ex, headers: { authorization: header } }));
    discard(second);
    if (second.status === 200) return;
    if (second.status === 401) {
      throw new FerryError('UNAUTHORIZED', `log in to ${registry}: the registry refused the user name or password (HTTP 401)`, {
        hint: 'check the user name and password',
      });
    }
    throw await this.describeFailure(registry, auth)(this.toExchange(ex), second);
  }

  /** GET a manifest or index by tag or digest; a by-digest answer is checked against its digest. */
  async getManifest(ref: Reference, options: CallOptions = {}): Promise<ManifestResponse> {
    const selector = referenceSelector(ref);
    const what = `get manifest ${formatReference(ref)}`;
    const ex: RegistryExchange = {
      repo: ref,
      method: 'GET',
      path: repoPath(ref, `manifests/${selector}`),
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      scopes: [repositoryScope(ref.repository, 'pull')],
      what,
      ok: [200],
      ...options,
    };
    // A corrupted or cut-off answer is fetched again (bounded); the exchange itself retried the rest.
    const retryIf = (e: unknown): boolean => isFerryError(e, 'DIGEST_MISMATCH') || (!(e instanceof FerryError) && isTransient(e));
    const fetched = withRetry(this.retry, { ...(options.signal ? { signal: options.signal } : {}), retryIf }, async () => {
      const res = await this.call(ex);
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
      throw networkError(ex.what, this.hostOf(ref.registry), err);
    });
  }

  /** HEAD a manifest: its digest, type and size, or undefined when there is none. */
  async headManifest(ref: Reference, options: CallOptions = {}): Promise<ManifestHead | undefined> {
    const res = await this.call({
      repo: ref,
      method: 'HEAD',
      path: repoPath(ref, `manifests/${referenceSelector(ref)}`),
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
    const res = await this.call({
      repo,
      method: 'HEAD',
      path: repoPath(repo, `blobs/${digest}`),
      scopes: [repositoryScope(repo.repository, options.push ? 'pull,push' : 'pull')],
      what: `check blob ${digest} in ${repo.registry}/${repo.repository}`,
      ok: [200, 404],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    discard(res);
    if (res.status === 404) return undefined;
    this.homes.remember(repo, digest);
    const len = Number(headerValue(res.headers, 'content-length'));
    return Number.isFinite(len) ? len : 0;
  }

  /**
   * Stream a blob. A dropped connection is resumed with Range from the byte reached (hashing
   * continues across the resume); with `verify` the stream fails at its end unless size and
   * digest match. Holds one of the client's transfer slots until the stream closes.
   */
  openBlob(repo: Repository, blob: BlobTarget, options: OpenBlobOptions = {}): Promise<Readable> {
    return this.downloads.openBlob(repo, blob, options);
  }

  /** A whole small blob (an image config) in memory, verified; a corrupted answer is fetched again. */
  getBlobBytes(repo: Repository, blob: BlobTarget, options: CallOptions = {}): Promise<Buffer> {
    return this.downloads.getBlobBytes(repo, blob, options);
  }

  /** Download a blob into `path` atomically; a blob failing its digest is fetched again (bounded). */
  downloadBlob(repo: Repository, blob: BlobTarget, path: string, options: CallOptions = {}): Promise<void> {
    return this.downloads.downloadBlob(repo, blob, path, options);
  }

  /** List a repository's tags, following the Link header's pages. */
  async listTags(repo: Repository, options: CallOptions = {}): Promise<string[]> {
    const tags: string[] = [];
    let path: string | URL = repoPath(repo, 'tags/list?n=1000');
    const what = `list tags of ${repo.registry}/${repo.repository}`;
    for (let page = 0; page < 1000; page++) {
      const res = await this.call({ repo, method: 'GET', path, scopes: [repositoryScope(repo.repository, 'pull')], what, ok: [200], ...options });
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

  /** Try a cross-repository mount of `digest` from `from` (see BlobUpload.mountBlob). */
  mountBlob(repo: Repository, digest: Digest, from: string, options: CallOptions = {}): Promise<{ mounted: boolean; upload: URL | undefined }> {
    return this.uploads.mountBlob(repo, digest, from, options);
  }

  /** Push a blob unless the repository has it: HEAD, mount, or upload (see BlobUpload.pushBlob). */
  pushBlob(repo: Repository, blob: BlobTarget, open: (signal?: AbortSignal) => Promise<Readable>, options: PushBlobOptions = {}): Promise<PushBlobResult> {
    return this.uploads.pushBlob(repo, blob, open, options);
  }

  /** Push a blob whose digest is known only at its end (see BlobUpload.pushBlobStream). */
  pushBlobStream(repo: Repository, open: (signal?: AbortSignal) => Promise<Readable>, options: CallOptions = {}): Promise<StreamedBlobResult> {
    return this.uploads.pushBlobStream(repo, open, options);
  }

  /** PUT a manifest or index under a tag or digest, with its media type; returns its digest. */
  async putManifest(ref: Reference, raw: Buffer, mediaType: string, options: CallOptions = {}): Promise<Digest> {
    const digest = digestOf(raw);
    const what = `put manifest ${digest} as ${formatReference(ref)}`;
    if (ref.digest !== undefined && ref.digest !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `${what}: the manifest bytes hash to ${digest}, not ${ref.digest}`);
    }
    const res = await this.call({
      repo: ref,
      method: 'PUT',
      path: repoPath(ref, `manifests/${referenceSelector(ref)}`),
      headers: { 'content-type': mediaType },
      body: raw,
      scopes: pushScopes(ref),
      what,
      ok: [201, 200, 204],
      ...options,
    });
    discard(res);
    checkCommitted(res, digest, what);
    return digest;
  }
}
