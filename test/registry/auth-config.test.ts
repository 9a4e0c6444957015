import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { parseChallenges } from '../../src/registry/auth.js';
import {
  DOCKER_HUB_CONFIG_KEY,
  configKey,
  dockerConfigPath,
  lookupCredentials,
  normalizeRegistryName,
  removeCredentials,
  storeCredentials,
} from '../../src/registry/docker-config.js';
import { apiHost } from '../../src/registry/client.js';
import { backoffDelay, DEFAULT_RETRY, parseRetryAfter } from '../../src/registry/retry.js';
import { isPlainHttpHost } from '../../src/registry/transport.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

describe('parseChallenges', () => {
  it('reads a Bearer challenge as Docker Hub sends it', () => {
    const c = parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull"');
    expect(c).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/redis:pull' } },
    ]);
  });

  it('reads Basic, unquoted values, escapes, spaces and several challenges in one header', () => {
    expect(parseChallenges('Basic realm="Registry Realm"')).toEqual([{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
    expect(parseChallenges('Bearer realm=http://127.0.0.1:1/token, service=svc')).toEqual([
      { scheme: 'bearer', params: { realm: 'http://127.0.0.1:1/token', service: 'svc' } },
    ]);
    expect(parseChallenges('Bearer realm="a\\"b", scope="repository:a/b:pull,push"')[0]?.params).toEqual({ realm: 'a"b', scope: 'repository:a/b:pull,push' });
    expect(parseChallenges('Basic realm="x", Bearer realm="https://t/token",service="s"').map((c) => c.scheme)).toEqual(['basic', 'bearer']);
  });

  it('survives garbage', () => {
    expect(parseChallenges('')).toEqual([]);
    expect(parseChallenges('=,,"')).toEqual([]);
  });
});

describe('hosts', () => {
  it('speaks plain HTTP to loopback and to hosts marked insecure, TLS otherwise', () => {
    expect(isPlainHttpHost('127.0.0.1:5000')).toBe(true);
    expect(isPlainHttpHost('127.3.4.5')).toBe(true);
    expect(isPlainHttpHost('localhost:5000')).toBe(true);
    expect(isPlainHttpHost('[::1]:5000')).toBe(true);
    expect(isPlainHttpHost('registry.example:5000')).toBe(false);
    expect(isPlainHttpHost('128.0.0.1')).toBe(false);
    expect(isPlainHttpHost('registry.example:5000', ['registry.example:5000'])).toBe(true);
    expect(isPlainHttpHost('registry.example:5000', ['registry.example'])).toBe(true);
    expect(isPlainHttpHost('registry.example:5000', ['other.example'])).toBe(false);
  });

  it("maps Docker Hub's names", () => {
    expect(apiHost('docker.io')).toBe('registry-1.docker.io');
    expect(apiHost('quay.io')).toBe('quay.io');
    expect(normalizeRegistryName('https://index.docker.io/v1/')).toBe('docker.io');
    expect(normalizeRegistryName('registry-1.docker.io')).toBe('docker.io');
    expect(normalizeRegistryName('http://127.0.0.1:5000/')).toBe('127.0.0.1:5000');
    expect(configKey('docker.io')).toBe(DOCKER_HUB_CONFIG_KEY);
    expect(configKey('127.0.0.1:5000')).toBe('127.0.0.1:5000');
  });
});

describe('retry timing', () => {
  it('reads Retry-After as seconds or as a date', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    const now = Date.parse('2024-01-01T00:00:00Z');
    expect(parseRetryAfter('Mon, 01 Jan 2024 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });

  it('backs off exponentially, capped', () => {
    const policy = { ...DEFAULT_RETRY, baseDelayMs: 100, maxDelayMs: 1000 };
    for (let i = 0; i < 20; i++) {
      expect(backoffDelay(policy, 1)).toBeGreaterThanOrEqual(50);
      expect(backoffDelay(policy, 1)).toBeLessThanOrEqual(100);
      expect(backoffDelay(policy, 3)).toBeGreaterThanOrEqual(200);
      expect(backoffDelay(policy, 10)).toBeLessThanOrEqual(1000);
    }
  });
});

describe("docker's config.json", () => {
  let dir: string;
  let bin: string;
  let env: NodeJS.ProcessEnv;

  const writeConfig = async (value: unknown): Promise<void> => {
    await writeFile(join(dir, 'config.json'), JSON.stringify(value));
  };

  beforeAll(async () => {
    dir = await makeTempDir('docker-config');
    bin = join(dir, 'bin');
    await mkdir(bin);
    // A credential helper speaking docker's protocol: server URL on stdin, JSON on stdout.
    await writeFile(
      join(bin, 'docker-credential-test'),
      [
        '#!/bin/sh',
        '[ "$1" = get ] || exit 2',
        'read -r url',
        'echo "$url" >> "$(dirname "$0")/asked"',
        'case "$url" in',
        '  helped.example:5000) echo \'{"ServerURL":"helped.example:5000","Username":"helper-user","Secret":"helper-secret"}\' ;;',
        '  https://index.docker.io/v1/) echo \'{"ServerURL":"https://index.docker.io/v1/","Username":"hub-user","Secret":"hub-secret"}\' ;;',
        '  token.example) echo \'{"ServerURL":"token.example","Username":"<token>","Secret":"refresh-me"}\' ;;',
        '  broken.example) echo "keychain locked" >&2; exit 3 ;;',
        '  *) echo "credentials not found in native keychain"; exit 1 ;;',
        'esac',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    env = { ...process.env, DOCKER_CONFIG: dir, PATH: `${bin}:${process.env.PATH ?? ''}` };
  });

  afterAll(async () => {
    await removeDir(dir);
  });

  it('finds the file through DOCKER_CONFIG, else ~/.docker', () => {
    expect(dockerConfigPath({ env: { DOCKER_CONFIG: '/x' } })).toBe('/x/config.json');
    expect(dockerConfigPath({ env: { HOME: '/home/u' } })).toBe('/home/u/.docker/config.json');
  });

  it('is anonymous without a file', async () => {
    expect(await lookupCredentials('127.0.0.1:5000', { env: { DOCKER_CONFIG: join(dir, 'none') } })).toBeUndefined();
  });

  it('reads base64 auth, username/password, and any spelling of the key', async () => {
    await writeConfig({
      auths: {
        '127.0.0.1:5000': { auth: Buffer.from('alice:pa:ss').toString('base64') },
        'https://other.example/': { username: 'bob', password: 'pw' },
        [DOCKER_HUB_CONFIG_KEY]: { auth: Buffer.from('hubber:hubpw').toString('base64') },
      },
    });
    expect(await lookupCredentials('127.0.0.1:5000', { env })).toEqual({ username: 'alice', password: 'pa:ss' });
    expect(await lookupCredentials('other.example', { env })).toEqual({ username: 'bob', password: 'pw' });
    expect(await lookupCredentials('docker.io', { env })).toEqual({ username: 'hubber', password: 'hubpw' });
    expect(await lookupCredentials('127.0.0.1:5001', { env })).toBeUndefined();
  });

  it('asks credHelpers per registry, then auths, then credsStore', async () => {
    await writeConfig({
      credsStore: 'test',
      credHelpers: { 'helped.example:5000': 'test' },
      auths: { 'filed.example': { auth: Buffer.from('filed:pw').toString('base64') }, 'empty.example': {} },
    });
    expect(await lookupCredentials('helped.example:5000', { env })).toEqual({ username: 'helper-user', password: 'helper-secret' });
    expect(await lookupCredentials('filed.example', { env })).toEqual({ username: 'filed', password: 'pw' });
    // Docker Hub goes to the helper under its historical key.
    expect(await lookupCredentials('docker.io', { env })).toEqual({ username: 'hub-user', password: 'hub-secret' });
    expect((await readFile(join(bin, 'asked'), 'utf8')).split('\n')).toContain(DOCKER_HUB_CONFIG_KEY);
    // An empty auths entry (docker leaves those when a store holds the secret) falls through to the store.
    expect(await lookupCredentials('empty.example', { env })).toBeUndefined();
    expect(await lookupCredentials('token.example', { env })).toEqual({ username: '', password: '', identityToken: 'refresh-me' });
  });

  it('says which helper failed and how', async () => {
    await writeConfig({ credsStore: 'test' });
    const err = await lookupCredentials('broken.example', { env }).catch((e: unknown) => e);
    expect(isFerryError(err, 'UNAUTHORIZED')).toBe(true);
    expect((err as Error).message).toContain('docker-credential-test');
    expect((err as Error).message).toContain('keychain locked');

    await writeConfig({ credsStore: 'absent' });
    const missing = await lookupCredentials('x.example', { env }).catch((e: unknown) => e);
    expect(isFerryError(missing, 'UNAUTHORIZED')).toBe(true);
    expect((missing as Error).message).toContain('docker-credential-absent is not on PATH');

    await writeConfig({ credsStore: '../evil' });
    expect(isFerryError(await lookupCredentials('x.example', { env }).catch((e: unknown) => e), 'USAGE')).toBe(true);
  });

  it('refuses a config that is not JSON instead of overwriting it', async () => {
    await writeFile(join(dir, 'config.json'), '{ not json');
    expect(isFerryError(await lookupCredentials('x.example', { env }).catch((e: unknown) => e), 'IO_ERROR')).toBe(true);
    expect(isFerryError(await storeCredentials('x.example', { username: 'u', password: 'p' }, { env }).catch((e: unknown) => e), 'IO_ERROR')).toBe(true);
    expect(await readFile(join(dir, 'config.json'), 'utf8')).toBe('{ not json');
  });

  it('stores and removes credentials as docker does, keeping the rest, mode 0600', async () => {
    await writeConfig({ credsStore: 'test', auths: { 'http://127.0.0.1:5000': { auth: 'b2xkOm9sZA==' } }, psFormat: 'table' });
    const path = await storeCredentials('127.0.0.1:5000', { username: 'new', password: 'secret' }, { env });
    const stored = JSON.parse(await readFile(path, 'utf8')) as { auths: Record<string, { auth: string }>; psFormat: string; credsStore: string };
    expect(stored.auths).toEqual({ '127.0.0.1:5000': { auth: Buffer.from('new:secret').toString('base64') } });
    expect(stored.psFormat).toBe('table');
    expect(stored.credsStore).toBe('test');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await lookupCredentials('127.0.0.1:5000', { env })).toEqual({ username: 'new', password: 'secret' });

    await storeCredentials('index.docker.io', { username: 'h', password: 'p' }, { env });
    expect(Object.keys((JSON.parse(await readFile(path, 'utf8')) as { auths: object }).auths)).toContain(DOCKER_HUB_CONFIG_KEY);

    expect(await removeCredentials('127.0.0.1:5000', { env })).toBe(true);
    expect(await removeCredentials('127.0.0.1:5000', { env })).toBe(false);
    const after = JSON.parse(await readFile(path, 'utf8')) as { auths: Record<string, unknown> };
    expect(Object.keys(after.auths)).toEqual([DOCKER_HUB_CONFIG_KEY]);
  });
});
