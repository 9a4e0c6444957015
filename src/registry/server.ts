import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, messageOf } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';

/**
 * A read-only OCI Distribution API server over any content: `ferry serve` puts the store behind it
 * (and the demo an OCI layout), so containerd, podman, skopeo and docker on other hosts can pull.
 */
export interface ServedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

export interface ServedBlob {
  size: number;
  mediaType?: string;
  /** Open the blob, optionally a byte range [start, end] inclusive. */
  open(range?: { start: number; end: number }): Promise<Readable>;
}

export interface RegistryContent {
  /** `reference` is a tag or a digest. */
  manifest(repository: string, reference: string): Promise<ServedManifest | undefined>;
  blob(repository: string, digest: Digest): Promise<ServedBlob | undefined>;
  /** undefined when the repository is unknown. */
  tags(repository: string): Promise<string[] | undefined>;
  repositories(): Promise<string[]>;
}

export interface RegistryServer {
  /** `127.0.0.1:PORT` as bound. */
  host: string;
  close(): Promise<void>;
}

type ErrorCode = 'NAME_UNKNOWN' | 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'UNSUPPORTED' | 'DENIED' | 'PAGINATION_NUMBER_INVALID' | 'DIGEST_INVALID';

function sendError(res: ServerResponse, status: number, code: ErrorCode, message: string): void {
  const body = JSON.stringify({ errors: [{ code, message, detail: null }] });
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function sendJson(res: ServerResponse, value: unknown, head: boolean, extra: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...extra });
  res.end(head ? undefined : body);
}

/** Parse `bytes=START-END` (one range; suffix and open ranges too) against a blob of `size` bytes. */
export function parseRange(header: string, size: number): { start: number; end: number } | 'invalid' | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined;
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return 'invalid';
  let start: number;
  let end: number;
  if (a === '') {
    const suffix = Number(b);
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  }
  if (start > end || start >= size) return 'invalid';
  return { start, end };
}

function paginate(items: string[], url: URL): { page: string[]; next: string | undefined } | 'invalid' {
  const nText = url.searchParams.get('n');
  const last = url.searchParams.get('last');
  let list = [...items].sort();
  if (last) list = list.filter((x) => x > last);
  if (nText === null) return { page: list, next: undefined };
  const n = Number(nText);
  if (!Number.isInteger(n) || n < 0) return 'invalid';
  const page = list.slice(0, n);
  const more = list.length > n && page.length > 0;
  return { page, next: more ? page[page.length - 1] : undefined };
}

async function handle(content: RegistryContent, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://registry');
  const path = decodeURIComponent(url.pathname);
  const method = req.method ?? 'GET';
  res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
  if (method !== 'GET' && method !== 'HEAD') {
    // Read-only by design: uploads and deletes get the spec's error body.
    sendError(res, 405, 'UNSUPPORTED', `${method} ${path}: this registry is read-only (ferry serve)`);
    return;
  }
  const head = method === 'HEAD';
  if (path === '/v2/' || path === '/v2') {
    sendJson(res, {}, head);
    return;
  }
  if (path === '/v2/_catalog') {
    const p = paginate(await content.repositories(), url);
    if (p === 'invalid') return sendError(res, 400, 'PAGINATION_NUMBER_INVALID', 'invalid n');
    const extra: Record<string, string> = p.next ? { Link: `</v2/_catalog?last=${encodeURIComponent(p.next)}&n=${url.searchParams.get('n')}>; rel="next"` } : {};
    sendJson(res, { repositories: p.page }, head, extra);
    return;
  }
  let m = /^\/v2\/(.+)\/tags\/list$/.exec(path);
  if (m) {
    const repository = m[1]!;
    const tags = await content.tags(repository);
    if (tags === undefined) return sendError(res, 404, 'NAME_UNKNOWN', `repository ${repository} not known`);
    const p = paginate(tags, url);
    if (p === 'invalid') return sendError(res, 400, 'PAGINATION_NUMBER_INVALID', 'invalid n');
    const extra: Record<string, string> = p.next
      ? { Link: `</v2/${repository}/tags/list?last=${encodeURIComponent(p.next)}&n=${url.searchParams.get('n')}>; rel="next"` }
      : {};
    sendJson(res, { name: repository, tags: p.page }, head, extra);
    return;
  }
  m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
  if (m) {
    const [, repository = '', reference = ''] = m;
    const found = await content.manifest(repository, reference);
    if (!found) return sendError(res, 404, 'MANIFEST_UNKNOWN', `manifest ${reference} of ${repository} not known`);
    res.writeHead(200, {
      'Content-Type': found.mediaType,
      'Content-Length': found.bytes.length,
      'Docker-Content-Digest': found.digest,
      ETag: `"${found.digest}"`,
    });
    res.end(head ? undefined : found.bytes);
    return;
  }
  m = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(path);
  if (m) {
    const [, repository = '', digestText = ''] = m;
    if (!isDigest(digestText)) return sendError(res, 400, 'DIGEST_INVALID', `invalid digest ${digestText}`);
    const blob = await content.blob(repository, digestText);
    if (!blob) return sendError(res, 404, 'BLOB_UNKNOWN', `blob ${digestText} not known in ${repository}`);
    const headers: Record<string, string | number> = {
      'Content-Type': blob.mediaType ?? 'application/octet-stream',
      'Docker-Content-Digest': digestText,
      'Accept-Ranges': 'bytes',
      ETag: `"${digestText}"`,
    };
    const rangeHeader = req.headers.range;
    const range = rangeHeader ? parseRange(rangeHeader, blob.size) : undefined;
    if (range === 'invalid') {
      res.writeHead(416, { 'Content-Range': `bytes */${blob.size}` });
      res.end();
      return;
    }
    if (range) {
      res.writeHead(206, { ...headers, 'Content-Length': range.end - range.start + 1, 'Content-Range': `bytes ${range.start}-${range.end}/${blob.size}` });
    } else {
      res.writeHead(200, { ...headers, 'Content-Length': blob.size });
    }
    if (head) {
      res.end();
      return;
    }
    await pipeline(await blob.open(range), res);
    return;
  }
  sendError(res, 404, 'NAME_UNKNOWN', `no route for ${path}`);
}

export async function startRegistryServer(content: RegistryContent, listen: { host: string; port: number }): Promise<RegistryServer> {
  const server: Server = createServer((req, res) => {
    handle(content, req, res).catch((err: unknown) => {
      if (!res.headersSent) sendError(res, 500, 'UNSUPPORTED', messageOf(err));
      else res.destroy(err as Error);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new FerryError('IO_ERROR', `listen on ${listen.host}:${listen.port}: ${err.message}`, { cause: err, hint: 'choose another --listen address or port' })),
    );
    server.listen(listen.port, listen.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
  return {
    host,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
