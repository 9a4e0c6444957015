import { execFile } from 'node:child_process';
import { createPrivateKey, randomUUID, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A Docker-style token server (the flow Docker Hub uses) for the `token` registry variant:
 * GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...] with optional basic credentials
 * answers an RS256 JWT that distribution verifies against `rootcertbundle` through the `x5c`
 * header. Valid users get the actions they ask for (restricted per user); anonymous callers get a
 * token with no access at all, so the registry answers 401 to what they then try.
 */
export interface TokenUser {
  password: string;
  /** The actions this user may be granted; default every action asked for. */
  actions?: string[];
}

export interface TokenRequest {
  service: string | undefined;
  scopes: string[];
  /** The authenticated user, or undefined for an anonymous request. */
  user: string | undefined;
  /** The HTTP status the token server answered. */
  status: number;
}

export interface TokenServer {
  url: string;                  // http://127.0.0.1:PORT/token (the realm)
  service: string;
  issuer: string;
  certFile: string;             // PEM, the registry's rootcertbundle
  requests: TokenRequest[];
  stop(): Promise<void>;
}

export interface TokenServerOptions {
  dir: string;                  // where key and cert are written
  users: Record<string, TokenUser>;
  service?: string;
  issuer?: string;
  /** Token lifetime (expires_in); default 300 s. */
  ttlSeconds?: number;
}

export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const service = options.service ?? 'ferry-test-registry';
  const issuer = options.issuer ?? 'ferry-test-token-issuer';
  const ttl = options.ttlSeconds ?? 300;
  const keyFile = join(options.dir, 'token-key.pem');
  const certFile = join(options.dir, 'token-cert.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile,
    '-days', '2', '-subj', '/CN=ferry-test-token-issuer',
  ]);
  const key = createPrivateKey(await readFile(keyFile));
  const certDer = new X509Certificate(await readFile(certFile)).raw.toString('base64');
  const requests: TokenRequest[] = [];

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(err instanceof Error ? err.message : String(err));
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
    const record: TokenRequest = { service: url.searchParams.get('service') ?? undefined, scopes, user: undefined, status: 0 };
    requests.push(record);
    const reply = (status: number, body: unknown): void => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET' || url.pathname !== '/token') {
      reply(404, { errors: [{ code: 'NOT_FOUND', message: `no such endpoint ${req.method} ${url.pathname}` }] });
      return;
    }
    let granted: Array<{ type: string; name: string; actions: string[] }> = [];
    const authorization = req.headers.authorization;
    if (authorization !== undefined) {
      const credentials = parseBasic(authorization);
      const user = credentials && options.users[credentials.username];
      if (!credentials || !user || user.password !== credentials.password) {
        res.setHeader('www-authenticate', 'Basic realm="ferry-test-token"');
        reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] });
        return;
      }
      record.user = credentials.username;
      granted = scopes.flatMap((scope) => {
        const parsed = parseScope(scope);
        if (!parsed) return [];
        const actions = parsed.actions.filter((a) => user.actions === undefined || user.actions.includes(a));
        return [{ type: parsed.type, name: parsed.name, actions }];
      });
    }
    const now = Math.floor(Date.now() / 1000);
    const token = signJwt(key, certDer, {
      iss: issuer,
      sub: record.user ?? '',
      aud: record.service ?? service,
      exp: now + ttl,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access: granted,
    });
    reply(200, { token, access_token: token, expires_in: ttl, issued_at: new Date(now * 1000).toISOString() });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('token server has no TCP address');
  return {
    url: `http://127.0.0.1:${address.port}/token`,
    service,
    issuer,
    certFile,
    requests,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function parseBasic(header: string): { username: string; password: string } | undefined {
  const m = /^Basic\s+(\S+)$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** `repository:ns/repo:pull,push` (the name never holds a colon; a host is not part of it). */
function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter((a) => a !== ''),
  };
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function signJwt(key: KeyObject, certDer: string, claims: Record<string, unknown>): string {
  const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer] };
  const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  const signature = sign('sha256', Buffer.from(signingInput), key);
  return `${signingInput}.${base64url(signature)}`;
}
