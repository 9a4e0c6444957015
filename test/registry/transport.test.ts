import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { LookupFunction } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import type { Digest } from '../../src/oci/digest.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient } from '../../src/registry/client.js';
import { concurrencyLimit } from '../../src/transfer/limiter.js';
import { resolveRemote } from '../../src/registry/remote-image.js';
import { runFerry } from '../helpers/ferry.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return `127.0.0.1:${address.port}`;
}

async function close(server: Server | undefined): Promise<void> {
  if (server === undefined) return;
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** Pass a request on to the registry unchanged. */
function forward(target: string, req: IncomingMessage, res: ServerResponse): void {
  const [host, port] = target.split(':') as [string, string];
  const upstream = httpRequest({ host, port: Number(port), method: req.method, path: req.url, headers: req.headers }, (up) => {
    res.writeHead(up.statusCode ?? 502, up.headers);
    up.pipe(res);
  });
  upstream.on('error', () => res.destroy());
  req.pipe(upstream);
}

let work: string;
let layout: TestLayout;
let registry: RunningRegistry;

beforeAll(async () => {
  work = await makeTempDir('registry-transport');
  layout = await buildTestLayout(join(work, 'layout'), { bigLayerBytes: 1024 * 1024 });
  registry = await startRegistry({ auth: 'token' });
  await pushTestImages(layout, registry);
});

afterAll(async () => {
  await registry?.stop();
  await removeDir(work);
});

const credentials = (): Promise<{ username: string; password: string }> => Promise.resolve({ username: registry.username!, password: registry.password! });

describe('redirects to blob storage', () => {
  let front: Server;
  let storage: Server;
  let frontHost: string;
  const storageRequests: Array<{ authorization: string | undefined; range: string | undefined }> = [];
  let dropNext = false;

  beforeAll(async () => {
    // Blob storage on another origin: serves the layout's blobs, records what it was sent.
    storage = createServer((req, res) => {
      void (async () => {
        storageRequests.push({ authorization: req.headers.authorization, range: req.headers.range });
        const hex = /\/sha256:([0-9a-f]{64})/.exec(req.url ?? '')?.[1];
        const path = join(layout.dir, 'blobs', 'sha256', hex ?? 'none');
        const size = (await stat(path)).size;
        const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
        const headers = { 'content-length': String(size - start), 'content-type': 'application/octet-stream' };
        if (start > 0) res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${size - 1}/${size}` });
        else res.writeHead(200, headers);
        if (dropNext) {
          dropNext = false;
          // A storage node that dies mid-blob: 100 KiB, then the connection is gone.
          const head = (await readFile(path)).subarray(0, 100 * 1024);
          res.write(head, () => res.socket?.destroy());
          return;
        }
        createReadStream(path, { start }).pipe(res);
      })().catch(() => res.destroy());
    });
    const storageHost = await listen(storage);
    // The registry's front: blob GETs are redirected to storage with a signed-URL-like query.
    front = createServer((req, res) => {
      const m = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '');
      if (m !== null && req.method === 'GET' && req.headers.authorization !== undefined) {
        res.writeHead(307, { location: `http://${storageHost}/storage/${m[2]!}?X-Signature=abc` });
        res.end();
        return;
      }
      forward(registry.host, req, res);
    });
    frontHost = await listen(front);
  });

  afterAll(async () => {
    await close(front);
    await close(storage);
  });

  it('follows the redirect without sending Authorization to the other host, and resumes there', async () => {
    const client = new RegistryClient({ credentials, retry: { baseDelayMs: 20 } });
    try {
      const image = (await resolveRemote(client, parseReference(`${frontHost}/test/big:latest`))).images[0]!;
      expect(image.digest).toBe(layout.refs.big);
      storageRequests.length = 0;
      dropNext = true;
      const layer = image.layers[1]!;
      expect(sha256(await collect(await layer.blob()))).toBe(layer.descriptor.digest);
      // The layer came from storage twice: dropped, then resumed with Range.
      expect(storageRequests).toHaveLength(2);
      expect(storageRequests.every((r) => r.authorization === undefined)).toBe(true);
      expect(storageRequests[1]!.range).toMatch(/^bytes=[1-9]\d*-$/);
    } finally {
      client.close();
    }
  });
});

describe('TLS', () => {
  let tlsServer: Server;
  let port: number;
  let certFile: string;
  // registry.test resolves to loopback for this test only: traffic stays on 127.0.0.1.
  const lookup = ((hostname: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    if (hostname !== 'registry.test') {
      callback(Object.assign(new Error(`test lookup: ${hostname} is not registry.test`), { code: 'ENOTFOUND' }));
      return;
    }
    if (options.all === true) callback(null, [{ address: '127.0.0.1', family: 4 }]);
    else callback(null, '127.0.0.1', 4);
  }) as unknown as LookupFunction;

  beforeAll(async () => {
    const keyFile = join(work, 'tls-key.pem');
    certFile = join(work, 'tls-cert.pem');
    await run('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1',
      '-subj', '/CN=registry.test', '-addext', 'subjectAltName=DNS:registry.test',
    ]);
    tlsServer = createTlsServer({ key: await readFile(keyFile), cert: await readFile(certFile) }, (req, res) => forward(registry.host, req, res));
    port = Number((await listen(tlsServer)).split(':')[1]);
  });

  afterAll(async () => {
    await close(tlsServer);
  });

  it('pulls over HTTPS trusting the --ca-file certificate', async () => {
    const client = new RegistryClient({ credentials, caFile: certFile, lookup });
    try {
      const ref = parseReference(`registry.test:${port}/test/app:latest`);
      const image = (await resolveRemote(client, ref)).images[0]!;
      expect(image.digest).toBe(layout.refs.app);
      const layer = image.layers[0]!;
      expect(sha256(await collect(await layer.blob()))).toBe(layer.descriptor.digest);
    } finally {
      client.close();
    }
  });

  it('refuses an untrusted certificate, with a hint about --ca-file', async () => {
    const client = new RegistryClient({ credentials, lookup });
    try {
      const err = await client.getManifest(parseReference(`registry.test:${port}/test/app:latest`)).catch((e: unknown) => e);
      expect(isFerryError(err, 'NETWORK_ERROR')).toBe(true);
      expect((err as Error).message).toContain('TLS certificate not trusted');
      expect((err as { hint?: string }).hint).toContain('--ca-file');
    } finally {
      client.close();
    }
  });

  it('ferry reads --ca-file before it connects anywhere', async () => {
    const missing = await runFerry(['inspect', '--ca-file', join(work, 'missing.pem'), 'registry.example/a/b']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`read CA file ${join(work, 'missing.pem')}`);
    const notPem = await runFerry(['--ca-file', join(work, 'tls-key.pem'), 'inspect', 'registry.example/a/b']);
    expect(notPem.code).toBe(2);
    expect(notPem.stderr).toContain('no PEM certificate');
  });

  it('speaks plain HTTP to a host named with --insecure-registry', async () => {
    const client = new RegistryClient({ credentials, lookup, insecureRegistries: [`registry.test:${registry.host.split(':')[1]!}`] });
    try {
      const got = await client.getManifest(parseReference(`registry.test:${registry.host.split(':')[1]!}/test/app:latest`));
      expect(got.digest).toBe(layout.refs.app);
    } finally {
      client.close();
    }
  });
});

describe('abort', () => {
  it('an aborted blob stream fails with the abort and frees its slot', async () => {
    const client = new RegistryClient({ credentials, pullSlots: concurrencyLimit(1) });
    try {
      const big = layout.images.big!.layers[1]!;
      const repo = { registry: registry.host, repository: 'test/big' };
      const controller = new AbortController();
      const stream = await client.openBlob(repo, { digest: big.digest as Digest, size: big.size }, { signal: controller.signal });
      controller.abort(new Error('user pressed ctrl-c'));
      const err = await collect(stream).catch((e: unknown) => e);
      expect((err as Error).message).toBe('user pressed ctrl-c');
      // With one slot, this would wait forever if the aborted stream still held it.
      const again = await collect(await client.openBlob(repo, { digest: big.digest as Digest, size: big.size }));
      expect(sha256(again)).toBe(big.digest);
    } finally {
      client.close();
    }
  });
});
