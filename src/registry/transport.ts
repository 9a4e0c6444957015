import { existsSync, readFileSync } from 'node:fs';
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { FerryError, UsageError, messageOf } from '../errors.js';

/**
 * The base layer of the registry client: one HTTP exchange over node:http/https with a streaming
 * body. It decides plain HTTP vs TLS per host (as docker does) and carries the CA set; auth,
 * retries and redirects are layers above it.
 */

export interface TransportOptions {
  /** Hosts (`host` or `host:port`) spoken to over plain HTTP, like docker's --insecure-registry. */
  insecureRegistries?: readonly string[];
  /** Extra CA certificates (PEM file) trusted for TLS, on top of the system CAs. */
  caFile?: string;
  /** Idle socket timeout; a stalled connection fails (and is retried above) after this long. */
  timeoutMs?: number;
  /** Name resolution override: tests map a TLS host name to 127.0.0.1. */
  lookup?: LookupFunction;
  userAgent?: string;
}

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** A Buffer is sent with Content-Length; a stream is sent as is (set Content-Length yourself). */
  body?: Buffer | Readable;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
  url: URL;
}

const SYSTEM_CA_FILES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new FerryError('IO_ERROR', `read ${what} ${path}: ${messageOf(err)}`, { cause: err });
  }
}

/** Node's bundled roots, the system bundle ($SSL_CERT_FILE or the distribution's file) and --ca-file. */
function caSet(caFile: string | undefined): string[] {
  const out: string[] = [...rootCertificates];
  const envFile = process.env.SSL_CERT_FILE;
  const systemFile = envFile !== undefined && envFile !== '' ? envFile : SYSTEM_CA_FILES.find((f) => existsSync(f));
  if (systemFile !== undefined) out.push(readPem(systemFile, 'system CA bundle'));
  if (caFile !== undefined) {
    const pem = readPem(caFile, 'CA file');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new UsageError(`CA file ${caFile}: no PEM certificate in it`, { hint: 'give --ca-file a PEM file (-----BEGIN CERTIFICATE-----)' });
    }
    out.push(pem);
  }
  return out;
}

/** The host part without port: `127.0.0.1:5000` -> `127.0.0.1`, `[::1]:5000` -> `::1`. */
export function hostName(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']'));
  const colon = host.lastIndexOf(':');
  return colon >= 0 ? host.slice(0, colon) : host;
}

/** Docker's rule: loopback registries speak plain HTTP; so do hosts the user marked insecure. */
export function isPlainHttpHost(host: string, insecureRegistries: readonly string[] = []): boolean {
  const name = hostName(host).toLowerCase();
  if (name === 'localhost' || name === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name)) return true;
  return insecureRegistries.some((h) => {
    const want = h.trim().toLowerCase().replace(/^[a-z]+:\/\//, '').replace(/\/+$/, '');
    return want === host.toLowerCase() || want === name;
  });
}

export class Transport {
  private readonly options: TransportOptions;
  private readonly httpAgent: http.Agent;
  private httpsAgent: https.Agent | undefined;

  constructor(options: TransportOptions = {}) {
    this.options = options;
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  /** `http://host` or `https://host` for an API host. */
  origin(host: string): string {
    return `${isPlainHttpHost(host, this.options.insecureRegistries) ? 'http' : 'https'}://${host}`;
  }

  private tlsAgent(): https.Agent {
    // Built on first TLS use, so a bad --ca-file only fails commands that need TLS.
    this.httpsAgent ??= new https.Agent({ keepAlive: true, maxSockets: 16, ca: caSet(this.options.caFile) });
    return this.httpsAgent;
  }

  request(req: HttpRequest): Promise<HttpResponse> {
    const { url, signal } = req;
    const isTls = url.protocol === 'https:';
    if (!isTls && url.protocol !== 'http:') {
      return Promise.reject(new FerryError('REGISTRY_ERROR', `${req.method} ${url.origin}: unsupported URL scheme "${url.protocol}"`));
    }
    const headers: Record<string, string> = { 'user-agent': this.options.userAgent ?? 'ferry', ...req.headers };
    if (Buffer.isBuffer(req.body)) headers['content-length'] = String(req.body.length);
    else if (req.body === undefined && req.method !== 'GET' && req.method !== 'HEAD') headers['content-length'] ??= '0';
    return new Promise<HttpResponse>((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortError(signal));
        return;
      }
      const options: https.RequestOptions = {
        method: req.method,
        headers,
        agent: isTls ? this.tlsAgent() : this.httpAgent,
        timeout: this.options.timeoutMs ?? 60_000,
      };
      if (this.options.lookup !== undefined) options.lookup = this.options.lookup;
      if (signal !== undefined) options.signal = signal;
      const r = (isTls ? https : http).request(url, options, (res) => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res, url });
      });
      r.on('timeout', () => r.destroy(Object.assign(new Error(`no data for ${options.timeout} ms`), { code: 'ETIMEDOUT' })));
      r.on('error', (err) => reject(err));
      const body = req.body;
      if (body === undefined) r.end();
      else if (Buffer.isBuffer(body)) r.end(body);
      else {
        body.on('error', (err) => r.destroy(err));
        body.pipe(r);
      }
    });
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent?.destroy();
  }
}

export function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : Object.assign(new Error('the operation was aborted'), { name: 'AbortError' });
}

/** Read a whole (small) body, refusing more than `limit` bytes. */
export async function readBody(res: HttpResponse, limit: number, what: string): Promise<Buffer> {
  const length = Number(res.headers['content-length']);
  if (Number.isFinite(length) && length > limit) {
    res.body.destroy();
    throw new FerryError('REGISTRY_ERROR', `${what}: response of ${length} bytes is over the ${limit}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      res.body.destroy();
      throw new FerryError('REGISTRY_ERROR', `${what}: response is over the ${limit}-byte limit`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Throw the body away so the connection can be reused (or closed). */
export function discard(res: HttpResponse): void {
  res.body.resume();
  res.body.on('error', () => undefined); // the body is unwanted: a late reset on it changes nothing
}

export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}
