import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient } from '../../src/registry/client.js';
import { lookupCredentials } from '../../src/registry/docker-config.js';
import { resolveRemote } from '../../src/registry/remote-image.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { runFerry } from '../helpers/ferry.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

let work: string;
let layout: TestLayout;
let token: RunningRegistry;
let basic: RunningRegistry;

/** A DOCKER_CONFIG directory holding `config`. */
async function dockerConfig(name: string, config: unknown): Promise<string> {
  const dir = join(work, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

const authOf = (user: string, password: string): string => Buffer.from(`${user}:${password}`).toString('base64');

beforeAll(async () => {
  work = await makeTempDir('registry-auth');
  layout = await buildTestLayout(join(work, 'layout'));
  [token, basic] = await Promise.all([startRegistry({ auth: 'token' }), startRegistry({ auth: 'basic' })]);
  await Promise.all([pushTestImages(layout, token), pushTestImages(layout, basic)]);
});

afterAll(async () => {
  await token?.stop();
  await basic?.stop();
  await removeDir(work);
});

/** Pull an image whole (manifest, config, every blob) and check what arrived. */
async function pullApp(client: RegistryClient, host: string): Promise<void> {
  const resolved = await resolveRemote(client, parseReference(`${host}/test/app:latest`));
  const image = resolved.images[0]!;
  expect(image.digest).toBe(layout.refs.app);
  for (const layer of image.layers) expect(sha256(await collect(await layer.blob()))).toBe(layer.descriptor.digest);
}

describe('bearer token auth', () => {
  it('pulls with credentials from config.json, one token per scope', async () => {
    const dir = await dockerConfig('token-creds', { auths: { [token.host]: { auth: authOf(token.username!, token.password!) } } });
    const client = new RegistryClient({ credentials: (r) => lookupCredentials(r, { env: { DOCKER_CONFIG: dir } }) });
    const before = token.tokenRequests!.length;
    try {
      await pullApp(client, token.host);
    } finally {
      client.close();
    }
    const asked = token.tokenRequests!.slice(before);
    expect(asked).toEqual([{ service: 'ferry-test-registry', scopes: ['repository:test/app:pull'], user: 'ferry', status: 200 }]);
  });

  it('fetches a new token when the registry answers 401 to a cached one', async () => {
    const proxy: FaultProxy = await startFaultProxy(token.host);
    const client = new RegistryClient({ credentials: () => Promise.resolve({ username: token.username!, password: token.password! }) });
    try {
      const ref = parseReference(`${proxy.host}/test/base:latest`);
      await client.getManifest(ref);
      const before = token.tokenRequests!.length;
      proxy.setFaults([{ kind: 'status', match: /^GET \/v2\/test\/base\/manifests\//, status: 401 }]);
      const again = await client.getManifest(ref);
      expect(again.digest).toBe(layout.refs.base);
      expect(proxy.pendingFaults()).toEqual([]);
      expect(token.tokenRequests!.length).toBe(before + 1);
    } finally {
      client.close();
      await proxy.stop();
    }
  });

  it('says authentication is needed without credentials (CLI: exit 1, no stack trace)', async () => {
    const dir = await dockerConfig('token-empty', {});
    const r = await runFerry(['inspect', `${token.host}/test/app`], { env: { DOCKER_CONFIG: dir } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`get manifest ${token.host}/test/app:latest: authentication is needed (HTTP 401`);
    expect(r.stderr).toContain(`ferry login ${token.host}`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('inspects through the CLI with credentials from DOCKER_CONFIG', async () => {
    const dir = await dockerConfig('token-cli', { auths: { [`http://${token.host}`]: { auth: authOf(token.username!, token.password!) } } });
    const r = await runFerry(['inspect', `${token.host}/test/app`], { env: { DOCKER_CONFIG: dir } });
    expect(r.stderr).toBe('');
    expect((JSON.parse(r.stdout) as { digest: string }).digest).toBe(layout.refs.app);
  });

  it('refuses a wrong password without printing it', async () => {
    const dir = await dockerConfig('token-wrong', { auths: { [token.host]: { auth: authOf('ferry', 'Wr0ngPassw0rd') } } });
    const r = await runFerry(['inspect', `${token.host}/test/app`], { env: { DOCKER_CONFIG: dir } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('refused the credentials');
    expect(r.stderr).not.toContain('Wr0ngPassw0rd');
    expect(r.stderr).not.toContain(authOf('ferry', 'Wr0ngPassw0rd'));
  });

  it('says DENIED when the user may pull but not push', async () => {
    const reader = token.readOnlyUser!;
    const client = new RegistryClient({ credentials: () => Promise.resolve(reader) });
    try {
      await pullApp(client, token.host);
      const bytes = Buffer.from('a blob the reader may not push');
      const err = await client
        .pushBlob({ registry: token.host, repository: 'test/app' }, { digest: digestOf(bytes), size: bytes.length }, () => Promise.resolve(Readable.from([bytes])))
        .catch((e: unknown) => e);
      expect(isFerryError(err, 'DENIED')).toBe(true);
      expect((err as Error).message).toContain('repository:test/app:pull,push');
    } finally {
      client.close();
    }
  });
});

describe('basic auth', () => {
  it('pulls with username/password from config.json', async () => {
    const dir = await dockerConfig('basic-creds', { auths: { [basic.host]: { username: basic.username, password: basic.password } } });
    const client = new RegistryClient({ credentials: (r) => lookupCredentials(r, { env: { DOCKER_CONFIG: dir } }) });
    try {
      await pullApp(client, basic.host);
    } finally {
      client.close();
    }
  });

  it('pulls with credentials from a credsStore helper (CLI)', async () => {
    const bin = join(work, 'helper-bin');
    await mkdir(bin, { recursive: true });
    await writeFile(
      join(bin, 'docker-credential-ferrytest'),
      `#!/bin/sh\nread -r url\n[ "$url" = "${basic.host}" ] || { echo "credentials not found in native keychain"; exit 1; }\necho '{"ServerURL":"${basic.host}","Username":"${basic.username!}","Secret":"${basic.password!}"}'\n`,
      { mode: 0o755 },
    );
    const dir = await dockerConfig('basic-helper', { credsStore: 'ferrytest' });
    const r = await runFerry(['inspect', '--raw', `${basic.host}/test/multi`], { env: { DOCKER_CONFIG: dir, PATH: `${bin}:${process.env.PATH ?? ''}` } });
    expect(r.stderr).toBe('');
    expect(sha256(Buffer.from(r.stdout))).toBe(layout.refs.multi);
  });

  it('says authentication is needed without credentials', async () => {
    const client = new RegistryClient({ credentials: () => Promise.resolve(undefined) });
    try {
      const err = await client.getManifest(parseReference(`${basic.host}/test/app`)).catch((e: unknown) => e);
      expect(isFerryError(err, 'UNAUTHORIZED')).toBe(true);
      expect((err as Error).message).toContain('authentication is needed');
      expect((err as { hint?: string }).hint).toContain(`ferry login ${basic.host}`);
    } finally {
      client.close();
    }
  });

  it('refuses a wrong password without printing it', async () => {
    const dir = await dockerConfig('basic-wrong', { auths: { [basic.host]: { auth: authOf('ferry', 'Wr0ngPassw0rd') } } });
    const r = await runFerry(['inspect', `${basic.host}/test/app`], { env: { DOCKER_CONFIG: dir } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('the registry refused the credentials (HTTP 401');
    expect(r.stderr).not.toContain('Wr0ngPassw0rd');
  });
});

describe('ferry login / logout', () => {
  for (const variant of ['basic', 'token'] as const) {
    it(`logs in to a ${variant} registry, writing config.json 0600, and out again`, async () => {
      const registry = variant === 'basic' ? basic : token;
      const dir = join(work, `login-${variant}`);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { 'other.example': { auth: authOf('o', 'p') } }, detachKeys: 'ctrl-x' }));
      const env = { DOCKER_CONFIG: dir };

      const wrong = await runFerry(['login', registry.host, '-u', registry.username!, '--password-stdin'], { env, input: 'Wr0ngPassw0rd\n' });
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toContain(`log in to ${registry.host}: the registry refused the user name or password`);
      expect(wrong.stderr).not.toContain('Wr0ngPassw0rd');
      expect(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'))).toEqual({ auths: { 'other.example': { auth: authOf('o', 'p') } }, detachKeys: 'ctrl-x' });

      const ok = await runFerry(['login', registry.host, '-u', registry.username!, '--password-stdin'], { env, input: `${registry.password!}\n` });
      expect(ok.stderr).toBe('');
      expect(ok.code).toBe(0);
      expect(ok.stdout).toContain('Login Succeeded');
      const path = join(dir, 'config.json');
      const written = JSON.parse(await readFile(path, 'utf8')) as { auths: Record<string, { auth: string }>; detachKeys: string };
      expect(written.auths[registry.host]).toEqual({ auth: authOf(registry.username!, registry.password!) });
      expect(written.auths['other.example']).toBeDefined();
      expect(written.detachKeys).toBe('ctrl-x');
      expect((await stat(path)).mode & 0o777).toBe(0o600);

      // The stored login is what later commands use.
      const inspect = await runFerry(['inspect', `${registry.host}/test/base`], { env });
      expect(inspect.stderr).toBe('');
      expect((JSON.parse(inspect.stdout) as { digest: string }).digest).toBe(layout.refs.base);

      const out = await runFerry(['logout', registry.host], { env });
      expect(out.code).toBe(0);
      expect(out.stdout).toContain(`Removed login credentials for ${registry.host}`);
      const after = JSON.parse(await readFile(path, 'utf8')) as { auths: Record<string, unknown> };
      expect(Object.keys(after.auths)).toEqual(['other.example']);
      const again = await runFerry(['logout', registry.host], { env });
      expect(again.code).toBe(0);
      expect(again.stdout).toContain(`Not logged in to ${registry.host}`);
    });
  }

  it('asks for -u and --password-stdin (usage errors, exit 2)', async () => {
    const env = { DOCKER_CONFIG: join(work, 'login-usage') };
    expect((await runFerry(['login', basic.host, '--password-stdin'], { env, input: 'x\n' })).code).toBe(2);
    const noStdin = await runFerry(['login', basic.host, '-u', 'ferry'], { env });
    expect(noStdin.code).toBe(2);
    expect(noStdin.stderr).toContain('--password-stdin');
  });
});
