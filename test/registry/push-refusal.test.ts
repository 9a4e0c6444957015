import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient } from '../../src/registry/client.js';
import { pushResolved } from '../../src/verbs/push.js';
import { memoryImage } from '../helpers/memory-image.js';

/** pushResolved refuses an index it cannot carry whole before it sends anything. */

let server: Server;
let host: string;
const seen: string[] = [];

beforeAll(async () => {
  // A loopback "registry" that would take anything: every request it gets is a failure here.
  server = createServer((req, res) => {
    seen.push(`${req.method ?? ''} ${req.url ?? ''}`);
    res.writeHead(404, { 'content-length': '0' });
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  host = `127.0.0.1:${address.port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('pushResolved', () => {
  it('refuses an index whose images are not all carried before any byte goes out', async () => {
    const amd64 = memoryImage([Buffer.from('layer a')], { architecture: 'amd64' });
    const arm64 = memoryImage([Buffer.from('layer b')], { architecture: 'arm64' });
    const entry = (digest: string, size: number, architecture: string): object => ({ mediaType: MediaType.ociManifest, digest, size, platform: { os: 'linux', architecture } });
    const raw = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [entry(amd64.digest, amd64.rawManifest.length, 'amd64'), entry(arm64.digest, arm64.rawManifest.length, 'arm64')],
      }),
    );
    const index = { digest: digestOf(raw), mediaType: MediaType.ociIndex, raw };
    const client = new RegistryClient();
    try {
      const err = await pushResolved(client, parseReference(`${host}/test/partial:latest`), { images: [amd64], index }).catch((e: unknown) => e);
      expect(isFerryError(err, 'UNSUPPORTED')).toBe(true);
      expect((err as Error).message).toBe(`push ${host}/test/partial:latest: the index ${index.digest} also names linux/arm64 ${arm64.digest}, which are not carried`);
    } finally {
      client.close();
    }
    expect(seen).toEqual([]);
    expect(amd64.opened.blob).toEqual([0]);
  });
});
