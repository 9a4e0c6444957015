import { FerryError, messageOf } from '../errors.js';
import { RegistryHttpError, parseRetryAfter } from './retry.js';
import { discard, headerValue, readBody, type Transport } from './transport.js';

/**
 * The auth layer: parse WWW-Authenticate challenges, answer Basic ones with the user's
 * credentials and Bearer ones with tokens fetched from the realm, cached per scope and
 * refreshed when the registry says 401 again.
 */

export interface Credentials {
  username: string;
  password: string;
  /** An OAuth2 refresh token (docker's `identitytoken`, helpers answering Username `<token>`). */
  identityToken?: string;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parse a WWW-Authenticate value (RFC 7235): `Bearer realm="...",service="...",scope="..."`.
 * Several challenges may share one header; scheme names are lowercased.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = (): void => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipSpace();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const start = i;
    const name = token();
    if (name === '') {
      i++; // stray character: skip it rather than loop forever
      continue;
    }
    skipSpace();
    if (header[i] === '=' && current !== undefined) {
      i++;
      skipSpace();
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++;
      } else {
        const vs = i;
        while (i < n && header[i] !== ',' && header[i] !== ' ') i++;
        value = header.slice(vs, i);
      }
      current.params[name.toLowerCase()] = value;
    } else if (header[i] === '=' && current === undefined) {
      i = start + name.length + 1; // a parameter before any scheme: malformed, skip it
    } else {
      current = { scheme: name.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/** `repository:ns/app:pull` / `repository:ns/app:pull,push` */
export function repositoryScope(repository: string, actions: 'pull' | 'pull,push'): string {
  return `repository:${repository}:${actions}`;
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

export interface TokenResponse {
  token: string;
  expiresInSeconds: number;
}

const TOKEN_MARGIN_MS = 5_000;
const MAX_TOKEN_RESPONSE = 1024 * 1024;

/** What the auth layer needs from the client: a way to send one request, and how to name things. */
export interface AuthEnvironment {
  transport: Transport;
  /** The registry as the user names it (`docker.io`, `127.0.0.1:5000`): for messages and `ferry login`. */
  registry: string;
  credentials: () => Promise<Credentials | undefined>;
  signal?: AbortSignal;
}

/**
 * One registry's authentication state. `header(scopes)` gives what to send without a round
 * trip; after a 401, `refresh(...)` learns the challenge and fetches what to send next time.
 */
export class Authenticator {
  private readonly env: AuthEnvironment;
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private credentialsPromise: Promise<Credentials | undefined> | undefined;
  /** Whether credentials were offered: a 401 then means "refused", not "needed". */
  usedCredentials = false;

  constructor(env: AuthEnvironment) {
    this.env = env;
  }

  private credentials(): Promise<Credentials | undefined> {
    this.credentialsPromise ??= this.env.credentials();
    return this.credentialsPromise;
  }

  /** The scheme the registry asked for, once known ('basic', 'bearer'). */
  get scheme(): string | undefined {
    return this.challenge?.scheme;
  }

  /** The Authorization value to send for a request needing `scopes`, if known now. */
  async header(scopes: readonly string[]): Promise<string | undefined> {
    if (this.challenge === undefined) return undefined;
    if (this.challenge.scheme === 'basic') return this.basicHeader();
    if (this.challenge.scheme === 'bearer') {
      const cached = this.tokens.get(scopeKey(scopes));
      if (cached !== undefined && cached.expiresAt > Date.now()) return `Bearer ${cached.value}`;
      return undefined;
    }
    return undefined;
  }

  private async basicHeader(): Promise<string | undefined> {
    const creds = await this.credentials();
    if (creds === undefined) return undefined;
    this.usedCredentials = true;
    return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
  }

  /**
   * A request needing `scopes` was answered 401 with `wwwAuthenticate`: forget the stale token,
   * learn the challenge, and return a fresh Authorization value, or undefined when there is
   * nothing new to offer (no credentials for Basic, unknown scheme).
   */
  async refresh(wwwAuthenticate: string | undefined, scopes: readonly string[], signal?: AbortSignal): Promise<string | undefined> {
    const challenges = wwwAuthenticate === undefined ? [] : parseChallenges(wwwAuthenticate);
    // A 401 without a challenge (some proxies) still means "your token is stale": use the known one.
    const chosen = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic') ?? this.challenge;
    if (chosen === undefined) return undefined;
    const key = scopeKey(scopes);
    this.tokens.delete(key);
    this.challenge = chosen;
    if (chosen.scheme === 'basic') return this.basicHeader();
    const wanted = scopes.length > 0 ? scopes : chosen.params.scope !== undefined ? chosen.params.scope.split(' ') : [];
    const token = await this.fetchToken(chosen, wanted, await this.credentials(), signal);
    const lifetime = token.expiresInSeconds * 1000;
    this.tokens.set(key, { value: token.token, expiresAt: Date.now() + lifetime - Math.min(TOKEN_MARGIN_MS, lifetime / 10) });
    return `Bearer ${token.token}`;
  }

  /** Ask the realm for a token (docker's flow: GET with Basic credentials, or the OAuth2 POST for identity tokens). */
  async fetchToken(challenge: Challenge, scopes: readonly string[], creds: Credentials | undefined, signal?: AbortSignal): Promise<TokenResponse> {
    const { registry, transport } = this.env;
    const realm = challenge.params.realm;
    if (realm === undefined || realm === '') {
      throw new FerryError('REGISTRY_ERROR', `authenticate to ${registry}: the Bearer challenge names no realm`);
    }
    let url: URL;
    try {
      url = new URL(realm);
    } catch (err) {
      throw new FerryError('REGISTRY_ERROR', `authenticate to ${registry}: bad token realm "${realm}"`, { cause: err });
    }
    const what = `get a token for ${registry} from ${url.origin}${url.pathname}`;
    const service = challenge.params.service;
    let res;
    if (creds?.identityToken !== undefined) {
      this.usedCredentials = true;
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'ferry' });
      if (service !== undefined) form.set('service', service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      res = await transport.request({
        method: 'POST',
        url,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: Buffer.from(form.toString()),
        ...(signal ? { signal } : {}),
      });
    } else {
      if (service !== undefined) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (creds !== undefined) {
        this.usedCredentials = true;
        headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      }
      res = await transport.request({ method: 'GET', url, headers, ...(signal ? { signal } : {}) });
    }
    if (res.status === 401 || res.status === 403) {
      discard(res);
      throw new RegistryHttpError(
        'UNAUTHORIZED',
        creds === undefined
          ? `${what}: authentication is needed (HTTP ${res.status})`
          : `${what}: the token service refused the credentials (HTTP ${res.status})`,
        res.status,
        { hint: `run 'ferry login ${registry}' with a user that may access it` },
      );
    }
    if (res.status !== 200) {
      discard(res);
      const retryAfterMs = parseRetryAfter(headerValue(res.headers, 'retry-after'));
      throw new RegistryHttpError('REGISTRY_ERROR', `${what}: HTTP ${res.status}`, res.status, retryAfterMs === undefined ? {} : { retryAfterMs });
    }
    const body = await readBody(res, MAX_TOKEN_RESPONSE, what);
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new FerryError('REGISTRY_ERROR', `${what}: the answer is not JSON: ${messageOf(err)}`);
    }
    const token = typeof parsed.token === 'string' ? parsed.token : typeof parsed.access_token === 'string' ? parsed.access_token : undefined;
    if (token === undefined || token === '') throw new FerryError('REGISTRY_ERROR', `${what}: the answer holds no token`);
    // Docker's rule: a token lives at least 60 s unless the server says otherwise.
    const expires = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : 60;
    return { token, expiresInSeconds: expires };
  }
}

function scopeKey(scopes: readonly string[]): string {
  return [...scopes].sort().join(' ');
}
