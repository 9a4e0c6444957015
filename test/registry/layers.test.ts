import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { Authenticator, type Credentials } from '../../src/registry/auth.js';
import { authenticate } from '../../src/registry/http/authenticate.js';
import { checkStatus, registryFailure } from '../../src/registry/http/check-status.js';
import { nameNetworkErrors } from '../../src/registry/http/network-errors.js';
import { followRedirects } from '../../src/registry/http/redirects.js';
import { baseRequest, type Exchange, type Send } from '../../src/registry/http/request.js';
import { retrying } from '../../src/registry/http/retry.js';
import { DEFAULT_RETRY, RegistryHttpError, type RetryPolicy } from '../../src/registry/retry.js';
import { Transport, discard, readBody } from '../../src/registry/transport.js';

/**
 * Each layer of the registry client alone (or on the base request only) against a loopback
 * node:http server that records what it was sent: request counts and headers are the outcomes.
 */

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

interface Loopback {
  host: string;
  origin: string;
  seen: Seen[];
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, seen: Seen, n: number) => void;

const servers: Loopback[] = [];
const transports: Transport[] = [];

afterEach(async () => {
  for (const t of transports.splice(0)) t.close();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/** A server that reads each request's body whole, records it, then lets `handler` answer. */
async function serve(handler: Handler): Promise<Loopback> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(parts) };
      seen.push(s);
      handler(req, res, s, seen.length);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const host = `127.0.0.1:${address.port}`;
  const loopback: Loopback = {
    host,
    origin: `http://${host}`,
    seen,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  servers.push(loopback);
  return loopback;
}

function transport(options: ConstructorParameters<typeof Transport>[0] = {}): Transport {
  const t = new Transport(options);
  transports.push(t);
  return t;
}

function answer(res: ServerResponse, status: number, headers: Record<string, string> = {}, body = ''): void {
  res.writeHead(status, { 'content-length': String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

async function text(send: Send, ex: Exchange): Promise<{ status: number; body: string }> {
  const res = await send(ex);
  return { status: res.status, body: (await readBody(res, 1 << 20, ex.what)).toString('utf8') };
}

const get = (url: string, extra: Partial<Exchange> = {}): Exchange => ({ method: 'GET', url: new URL(url), what: `get ${url}`, ...extra });

const fast: RetryPolicy = { ...DEFAULT_RETRY, attempts: 3, baseDelayMs: 5, maxDelayMs: 20 };

describe('base request', () => {
  it('sends method, URL, headers and a streamed body, and gives status, headers and body back', async () => {
    const server = await serve((_req, res, s) => answer(res, 201, { 'x-got': String(s.body.length) }, `echo ${s.body.toString()}`));
    const send = baseRequest(transport({ userAgent: 'ferry-test' }));
    const res = await send({
      method: 'PUT',
      url: new URL(`${server.origin}/v2/a/blobs/uploads/1?digest=x`),
      headers: { 'content-type': 'application/octet-stream', 'content-length': '6' },
      body: Readable.from([Buffer.from('abc'), Buffer.from('def')]),
      what: 'put',
    });
    expect(res.status).toBe(201);
    expect(res.headers['x-got']).toBe('6');
    expect((await readBody(res, 100, 'put')).toString()).toBe('echo abcdef');
    expect(server.seen).toHaveLength(1);
    expect(server.seen[0]).toMatchObject({ method: 'PUT', url: '/v2/a/blobs/uploads/1?digest=x', body: Buffer.from('abcdef') });
    expect(server.seen[0]!.headers['user-agent']).toBe('ferry-test');
    expect(server.seen[0]!.headers['content-type']).toBe('application/octet-stream');
  });

  it('fails a stalled answer after the idle timeout, and an aborted one at once', async () => {
    const server = await serve(() => undefined); // never answers
    const send = baseRequest(transport({ timeoutMs: 200 }));
    const stalled = await send(get(`${server.origin}/v2/`)).catch((e: unknown) => e);
    expect((stalled as NodeJS.ErrnoException).code).toBe('ETIMEDOUT');
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('stop now')), 50);
    const aborted = await baseRequest(transport())(get(`${server.origin}/v2/`, { signal: controller.signal })).catch((e: unknown) => e);
    // node:http names the abort itself (its cause is the reason); the transport's default timeout is 60 s.
    expect((aborted as Error).name).toBe('AbortError');
  });
});

describe('redirects', () => {
  it('follows a chain on the same origin with Authorization, drops it on another host, and never brings it back there', async () => {
    const storage = await serve((_req, res) => answer(res, 200, {}, 'blob bytes'));
    const front = await serve((req, res) => {
      if (req.url === '/v2/a/blobs/one') answer(res, 302, { location: '/v2/a/blobs/two' });
      else if (req.url === '/v2/a/blobs/two') answer(res, 307, { location: `${storage.origin}/store/two?sig=1` });
      else answer(res, 404);
    });
    const send = followRedirects(baseRequest(transport()));
    const got = await text(send, get(`${front.origin}/v2/a/blobs/one`, { headers: { authorization: 'Bearer secret', range: 'bytes=5-' } }));
    expect(got).toEqual({ status: 200, body: 'blob bytes' });
    expect(front.seen.map((s) => [s.url, s.headers.authorization])).toEqual([
      ['/v2/a/blobs/one', 'Bearer secret'],
      ['/v2/a/blobs/two', 'Bearer secret'],
    ]);
    expect(storage.seen).toHaveLength(1);
    expect(storage.seen[0]!.url).toBe('/store/two?sig=1');
    expect(storage.seen[0]!.headers.authorization).toBeUndefined();
    // The other headers go along: a resume's Range must reach the storage.
    expect(storage.seen[0]!.headers.range).toBe('bytes=5-');
  });

  it('gives up after 5 redirects, naming the operation', async () => {
    const loop = await serve((_req, res, _s, n) => answer(res, 307, { location: `/hop/${n}` }));
    const err = await followRedirects(baseRequest(transport()))(get(`${loop.origin}/v2/x`)).catch((e: unknown) => e);
    expect(isFerryError(err, 'REGISTRY_ERROR')).toBe(true);
    expect((err as Error).message).toBe(`get ${loop.origin}/v2/x: more than 5 redirects`);
    expect(loop.seen).toHaveLength(6);
  });

  it('does not follow a redirect of an upload: its 3xx is the answer', async () => {
    const server = await serve((_req, res) => answer(res, 307, { location: '/elsewhere' }));
    const res = await followRedirects(baseRequest(transport()))({ method: 'PUT', url: new URL(`${server.origin}/v2/a/blobs/uploads/1`), body: Buffer.from('x'), what: 'put' });
    discard(res);
    expect(res.status).toBe(307);
    expect(server.seen.map((s) => s.url)).toEqual(['/v2/a/blobs/uploads/1']);
  });
});

/** A registry that wants `Basic user:password`, or a Bearer token from its token server. */
async function basicRegistry(user: string, password: string): Promise<Loopback> {
  const good = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  return serve((req, res) => {
    if (req.headers.authorization === good) answer(res, 200, {}, 'ok');
    else answer(res, 401, { 'www-authenticate': 'Basic realm="test"' }, '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
  });
}

async function tokenRegistry(user: string, password: string): Promise<{ registry: Loopback; tokens: Loopback; revoke(): void }> {
  const good = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  let generation = 0;
  const tokens = await serve((req, res) => {
    if (req.headers.authorization !== good) {
      answer(res, 401, {}, '{"details":"incorrect username or password"}');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    // The token names its scopes: the registry accepts it for those only.
    const token = `t${generation}:${url.searchParams.getAll('scope').sort().join('+')}`;
    answer(res, 200, { 'content-type': 'application/json' }, JSON.stringify({ token, expires_in: 300 }));
  });
  const registry = await serve((req, res) => {
    const scope = req.url?.startsWith('/v2/b/') ? 'repository:b:pull' : 'repository:a:pull';
    if (req.headers.authorization === `Bearer t${generation}:${scope}`) {
      answer(res, 200, {}, 'ok');
      return;
    }
    answer(res, 401, { 'www-authenticate': `Bearer realm="${tokens.origin}/token",service="test",scope="${scope}"` });
  });
  return { registry, tokens, revoke: () => generation++ };
}

function authLayer(t: Transport, registry: Loopback, creds: Credentials | undefined): { send: Send; auth: Authenticator } {
  const auth = new Authenticator({ transport: t, registry: registry.host, credentials: () => Promise.resolve(creds) });
  return { auth, send: authenticate(baseRequest(t), { authenticator: auth, origin: registry.origin }) };
}

describe('authenticate', () => {
  it('answers a Basic challenge, then sends Basic at once', async () => {
    const registry = await basicRegistry('ferry', 'pw');
    const { send } = authLayer(transport(), registry, { username: 'ferry', password: 'pw' });
    expect((await text(send, get(`${registry.origin}/v2/`))).status).toBe(200);
    expect(registry.seen.map((s) => s.headers.authorization)).toEqual([undefined, `Basic ${Buffer.from('ferry:pw').toString('base64')}`]);
    expect((await text(send, get(`${registry.origin}/v2/a/tags/list`))).status).toBe(200);
    expect(registry.seen).toHaveLength(3); // no second challenge
  });

  it('a wrong Basic password: the 401 stays, and the status layer says the credentials were refused, never printing them', async () => {
    const registry = await basicRegistry('ferry', 'pw');
    const { send, auth } = authLayer(transport(), registry, { username: 'ferry', password: 'wrong-secret' });
    const checked = checkStatus(send, registryFailure({ registry: registry.host, usedCredentials: () => auth.usedCredentials }));
    const err = await checked(get(`${registry.origin}/v2/a/manifests/1`, { ok: [200], what: `get manifest ${registry.host}/a:1` })).catch((e: unknown) => e);
    expect(isFerryError(err, 'UNAUTHORIZED')).toBe(true);
    expect((err as RegistryHttpError).status).toBe(401);
    expect((err as Error).message).toBe(`get manifest ${registry.host}/a:1: the registry refused the credentials (HTTP 401: UNAUTHORIZED authentication required)`);
    expect((err as RegistryHttpError).hint).toBe(`check the user name and password; run 'ferry login ${registry.host}' again`);
    expect(JSON.stringify(err)).not.toContain('wrong-secret');
    expect(registry.seen).toHaveLength(2); // one try without, one with: then the answer stands
  });

  it('without credentials the status layer says authentication is needed', async () => {
    const registry = await basicRegistry('ferry', 'pw');
    const { send, auth } = authLayer(transport(), registry, undefined);
    const checked = checkStatus(send, registryFailure({ registry: registry.host, usedCredentials: () => auth.usedCredentials }));
    const err = await checked(get(`${registry.origin}/v2/`, { ok: [200], what: 'ping' })).catch((e: unknown) => e);
    expect(isFerryError(err, 'UNAUTHORIZED')).toBe(true);
    expect((err as Error).message).toMatch(/^ping: authentication is needed \(HTTP 401/);
    expect(registry.seen).toHaveLength(1);
  });

  it('fetches a Bearer token per scope, caches it, and fetches again when the registry refuses a cached one', async () => {
    const { registry, tokens, revoke } = await tokenRegistry('ferry', 'pw');
    const { send } = authLayer(transport(), registry, { username: 'ferry', password: 'pw' });
    const pullA = { scopes: ['repository:a:pull'] };
    expect((await text(send, get(`${registry.origin}/v2/a/manifests/1`, pullA))).status).toBe(200);
    expect(tokens.seen).toHaveLength(1);
    expect(new URL(tokens.seen[0]!.url, 'http://x').searchParams.getAll('scope')).toEqual(['repository:a:pull']);
    expect(new URL(tokens.seen[0]!.url, 'http://x').searchParams.get('service')).toBe('test');
    expect(tokens.seen[0]!.headers.authorization).toBe(`Basic ${Buffer.from('ferry:pw').toString('base64')}`);

    // Cached: the same scope goes with the token at once.
    expect((await text(send, get(`${registry.origin}/v2/a/manifests/2`, pullA))).status).toBe(200);
    expect(tokens.seen).toHaveLength(1);
    expect(registry.seen.map((s) => s.headers.authorization)).toEqual([undefined, 'Bearer t0:repository:a:pull', 'Bearer t0:repository:a:pull']);

    // Another scope: another token.
    expect((await text(send, get(`${registry.origin}/v2/b/manifests/1`, { scopes: ['repository:b:pull'] }))).status).toBe(200);
    expect(tokens.seen).toHaveLength(2);

    // The registry no longer takes the cached token: one 401, a fresh token, the same request again.
    revoke();
    const before = registry.seen.length;
    expect((await text(send, get(`${registry.origin}/v2/a/manifests/3`, pullA))).status).toBe(200);
    expect(tokens.seen).toHaveLength(3);
    expect(registry.seen.slice(before).map((s) => s.headers.authorization)).toEqual(['Bearer t0:repository:a:pull', 'Bearer t1:repository:a:pull']);
  });

  it('a wrong password at the token service fails clearly, naming the registry and what to do', async () => {
    const { registry, tokens } = await tokenRegistry('ferry', 'pw');
    const { send } = authLayer(transport(), registry, { username: 'ferry', password: 'wrong-secret' });
    const err = await send(get(`${registry.origin}/v2/a/manifests/1`, { scopes: ['repository:a:pull'] })).catch((e: unknown) => e);
    expect(isFerryError(err, 'UNAUTHORIZED')).toBe(true);
    expect((err as Error).message).toBe(`get a token for ${registry.host} from ${tokens.origin}/token: the token service refused the credentials (HTTP 401)`);
    expect((err as RegistryHttpError).hint).toBe(`run 'ferry login ${registry.host}' with a user that may access it`);
    expect((err as Error).message).not.toContain('wrong-secret');
    expect(registry.seen).toHaveLength(1);
    expect(tokens.seen).toHaveLength(1);
  });

  it('sends no Authorization to another origin (an upload location on storage)', async () => {
    const registry = await basicRegistry('ferry', 'pw');
    const storage = await serve((_req, res) => answer(res, 202));
    const { send } = authLayer(transport(), registry, { username: 'ferry', password: 'pw' });
    await text(send, get(`${registry.origin}/v2/`)); // learns Basic
    discard(await send({ method: 'PATCH', url: new URL(`${storage.origin}/upload/1`), body: Buffer.from('x'), what: 'patch' }));
    expect(storage.seen).toHaveLength(1);
    expect(storage.seen[0]!.headers.authorization).toBeUndefined();
  });

  it('a token expiring under a streamed upload is a retryable UNAUTHORIZED: the stream cannot be sent again', async () => {
    const { registry, tokens, revoke } = await tokenRegistry('ferry', 'pw');
    const { send } = authLayer(transport(), registry, { username: 'ferry', password: 'pw' });
    const scopes = { scopes: ['repository:a:pull'] };
    await text(send, get(`${registry.origin}/v2/a/x`, scopes));
    revoke();
    const err = await send({ method: 'PATCH', url: new URL(`${registry.origin}/v2/a/blobs/uploads/1`), body: Readable.from([Buffer.from('data')]), what: 'patch', ...scopes }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryHttpError);
    expect((err as RegistryHttpError).retryable).toBe(true);
    expect((err as Error).message).toBe('patch: authentication expired during the upload');
    expect(registry.seen.filter((s) => s.method === 'PATCH')).toHaveLength(1);
    expect(tokens.seen).toHaveLength(2); // the fresh token is ready for the caller's next try
  });
});

describe('retry', () => {
  const failure = registryFailure({ registry: 'test', usedCredentials: () => false });
  const stack = (t: Transport, policy: RetryPolicy): Send => retrying(checkStatus(baseRequest(t), failure), policy);

  it("waits as long as a 503's Retry-After says, then succeeds", async () => {
    const server = await serve((_req, res, _s, n) => (n === 1 ? answer(res, 503, { 'retry-after': '1' }) : answer(res, 200, {}, 'ok')));
    const started = Date.now();
    const got = await text(stack(transport(), fast), get(`${server.origin}/v2/`, { ok: [200] }));
    expect(got).toEqual({ status: 200, body: 'ok' });
    expect(server.seen).toHaveLength(2);
    // Backoff alone would have waited 5 ms or so.
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
  });

  it('tries a reset connection again', async () => {
    const server = await serve((req, res, _s, n) => (n === 1 ? req.socket.destroy() : answer(res, 200, {}, 'ok')));
    const got = await text(stack(transport(), fast), get(`${server.origin}/v2/`, { ok: [200] }));
    expect(got.status).toBe(200);
    expect(server.seen).toHaveLength(2);
  });

  it('stops at the attempt limit with the last error, naming the status', async () => {
    const server = await serve((_req, res) => answer(res, 503, {}, '{"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}'));
    const err = await stack(transport(), fast)(get(`${server.origin}/v2/`, { ok: [200], what: 'ping test' })).catch((e: unknown) => e);
    expect(isFerryError(err, 'REGISTRY_ERROR')).toBe(true);
    expect((err as Error).message).toBe('ping test: the registry answered 503 (HTTP 503: UNAVAILABLE down for maintenance)');
    expect(server.seen).toHaveLength(3);
  });

  it('fails at once when Retry-After is longer than the client waits', async () => {
    const server = await serve((_req, res) => answer(res, 429, { 'retry-after': '3600' }));
    const err = await stack(transport(), { ...fast, maxRetryAfterMs: 1000 })(get(`${server.origin}/v2/`, { ok: [200], what: 'ping test' })).catch((e: unknown) => e);
    expect((err as Error).message).toContain('the registry asks to retry after 3600 s');
    expect(server.seen).toHaveLength(1);
  });

  it('does not retry what is final (404) or what cannot be sent again (a streamed upload, a commit)', async () => {
    const server = await serve((req, res) => (req.url === '/missing' ? answer(res, 404) : answer(res, 503)));
    const send = stack(transport(), fast);
    const missing = await send(get(`${server.origin}/missing`, { ok: [200] })).catch((e: unknown) => e);
    expect(isFerryError(missing, 'NOT_FOUND')).toBe(true);
    const streamed = await send({ method: 'PATCH', url: new URL(`${server.origin}/v2/a/blobs/uploads/1`), body: Readable.from([Buffer.from('x')]), what: 'patch', ok: [202] }).catch((e: unknown) => e);
    expect((streamed as RegistryHttpError).status).toBe(503);
    const commit = await send({ method: 'PUT', url: new URL(`${server.origin}/v2/a/blobs/uploads/1?digest=d`), body: Buffer.alloc(0), retry: false, what: 'commit', ok: [201] }).catch((e: unknown) => e);
    expect((commit as RegistryHttpError).status).toBe(503);
    expect(server.seen.map((s) => s.method)).toEqual(['GET', 'PATCH', 'PUT']);
    // A replayable body is sent again.
    await send({ method: 'PUT', url: new URL(`${server.origin}/v2/a/manifests/1`), body: Buffer.from('{}'), what: 'put manifest', ok: [201] }).catch(() => undefined);
    expect(server.seen.filter((s) => s.url === '/v2/a/manifests/1').map((s) => s.body.toString())).toEqual(['{}', '{}', '{}']);
  });
});

describe('network errors', () => {
  it('a refused connection is a NETWORK_ERROR naming the operation, with a hint', async () => {
    const server = await serve((_req, res) => answer(res, 200));
    const origin = server.origin;
    await server.close();
    const send = nameNetworkErrors(baseRequest(transport()), { host: server.host, tls: false });
    const err = await send(get(`${origin}/v2/`, { what: `ping ${server.host}` })).catch((e: unknown) => e);
    expect(isFerryError(err, 'NETWORK_ERROR')).toBe(true);
    expect((err as Error).message).toMatch(new RegExp(`^ping ${server.host.replace(/\./g, '\\.')}: cannot reach the registry: .*ECONNREFUSED`));
    expect((err as RegistryHttpError).hint).toBe(`check that ${server.host} is up and reachable`);
  });
});
