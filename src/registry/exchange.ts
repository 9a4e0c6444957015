import type { Digest } from '../oci/digest.js';
import type { Limiter } from '../oci/limiter.js';
import { repositoryScope } from './auth.js';
import type { Exchange } from './http/request.js';
import type { HttpResponse } from './transport.js';

/**
 * What the registry client's parts (manifests, blob download, blob upload) say to the layered
 * exchange: which repository, a path under the API origin or an absolute upload location, the
 * token scopes. RegistryClient turns it into an `Exchange` for that registry's layer stack.
 */

export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

/** Where a repository lives: `Reference` satisfies it. */
export interface Repository {
  registry: string;
  repository: string;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface BlobTarget {
  digest: Digest;
  size: number;
}

export interface RegistryExchange extends Omit<Exchange, 'url' | 'repository'> {
  repo: Repository;
  /** Path under the API origin (`/v2/...`), or an absolute URL (upload locations). */
  path: string | URL;
  scopes: readonly string[];
  ok: readonly number[];
}

/** Send one exchange through the registry's layers (auth, redirects, status, retries, network errors). */
export type RegistryCall = (ex: RegistryExchange) => Promise<HttpResponse>;

/** The API host: Docker Hub's API is not at docker.io. */
export function apiHost(registry: string): string {
  return registry === 'docker.io' ? DOCKER_HUB_API_HOST : registry;
}

export function repoPath(repo: Repository, rest: string): string {
  return `/v2/${repo.repository}/${rest}`;
}

export function pushScopes(repo: Repository, from?: string): string[] {
  const scopes = [repositoryScope(repo.repository, 'pull,push')];
  if (from !== undefined) scopes.push(repositoryScope(from, 'pull'));
  return scopes;
}

export function blobWhat(repo: Repository, digest: Digest): string {
  return `blob ${digest} of ${repo.registry}/${repo.repository}`;
}

/** Hold one slot of `limit` until `release` is called (a blob's slot lasts as long as its stream). */
export function holdSlot(limit: Limiter): Promise<() => void> {
  return new Promise((acquired) => {
    void limit(() => new Promise<void>((release) => acquired(release)));
  });
}

/** Repositories known to hold a blob, per registry: candidates for a cross-repository mount. */
export class BlobHomes {
  private readonly homes = new Map<string, Set<string>>();

  remember(repo: Repository, digest: Digest): void {
    const key = `${repo.registry} ${digest}`;
    let homes = this.homes.get(key);
    if (homes === undefined) {
      homes = new Set();
      this.homes.set(key, homes);
    }
    homes.add(repo.repository);
  }

  of(registry: string, digest: Digest): ReadonlySet<string> {
    return this.homes.get(`${registry} ${digest}`) ?? new Set<string>();
  }
}
