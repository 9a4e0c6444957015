import { spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { FerryError, messageOf } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-file.js';
import type { Credentials } from './auth.js';

/**
 * Docker's client config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): where
 * `docker login` leaves credentials, so ferry finds the same ones. Docker Hub is filed under
 * its historical key `https://index.docker.io/v1/`.
 */

export const DOCKER_HUB_CONFIG_KEY = 'https://index.docker.io/v1/';

export interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
  [key: string]: unknown;
}

export interface DockerConfigFile {
  auths?: Record<string, AuthEntry>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

export interface DockerConfigOptions {
  /** Environment to read DOCKER_CONFIG, HOME and PATH from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export function dockerConfigPath(options: DockerConfigOptions = {}): string {
  const env = options.env ?? process.env;
  const dir = env.DOCKER_CONFIG !== undefined && env.DOCKER_CONFIG !== '' ? env.DOCKER_CONFIG : join(env.HOME ?? homedir(), '.docker');
  return join(dir, 'config.json');
}

/** The registry a config key or login argument names: `https://index.docker.io/v1/` -> `docker.io`. */
export function normalizeRegistryName(text: string): string {
  let host = text.trim().toLowerCase().replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  const slash = host.indexOf('/');
  if (slash >= 0) host = host.slice(0, slash);
  if (host === 'index.docker.io' || host === 'registry-1.docker.io' || host === 'registry.hub.docker.com') return 'docker.io';
  return host;
}

/** The key docker files a registry's credentials under. */
export function configKey(registry: string): string {
  const name = normalizeRegistryName(registry);
  return name === 'docker.io' ? DOCKER_HUB_CONFIG_KEY : name;
}

export async function readDockerConfig(path: string): Promise<DockerConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new FerryError('IO_ERROR', `read docker config ${path}: ${messageOf(err)}`, { cause: err });
  }
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FerryError('IO_ERROR', `read docker config ${path}: not valid JSON`, { cause: err, hint: 'fix or remove the file' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FerryError('IO_ERROR', `read docker config ${path}: not a JSON object`, { hint: 'fix or remove the file' });
  }
  return value as DockerConfigFile;
}

/** The entry of `auths` for this registry, whatever spelling of the key docker or a user used. */
function findAuthEntry(config: DockerConfigFile, registry: string): [string, AuthEntry] | undefined {
  const want = normalizeRegistryName(registry);
  const auths = config.auths ?? {};
  const exact = auths[configKey(registry)];
  if (exact !== undefined) return [configKey(registry), exact];
  for (const [key, entry] of Object.entries(auths)) {
    if (normalizeRegistryName(key) === want) return [key, entry];
  }
  return undefined;
}

function credentialsFromEntry(entry: AuthEntry, key: string, path: string): Credentials | undefined {
  if (typeof entry.identitytoken === 'string' && entry.identitytoken !== '') {
    return { username: '', password: '', identityToken: entry.identitytoken };
  }
  if (typeof entry.auth === 'string' && entry.auth !== '') {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) {
      throw new FerryError('IO_ERROR', `read docker config ${path}: the "auth" of ${key} is not base64 of user:password`, {
        hint: `run 'ferry login ${normalizeRegistryName(key)}' again`,
      });
    }
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof entry.username === 'string' && typeof entry.password === 'string') {
    return { username: entry.username, password: entry.password };
  }
  return undefined;
}

/**
 * The credentials for a registry, in docker's order: a per-registry credential helper, then a
 * filled-in `auths` entry, then the default `credsStore`. Undefined means anonymous.
 */
export async function lookupCredentials(registry: string, options: DockerConfigOptions = {}): Promise<Credentials | undefined> {
  const path = dockerConfigPath(options);
  const config = await readDockerConfig(path);
  const name = normalizeRegistryName(registry);
  const helper = Object.entries(config.credHelpers ?? {}).find(([k]) => normalizeRegistryName(k) === name)?.[1];
  if (helper !== undefined && helper !== '') return runCredentialHelper(helper, configKey(registry), options);
  const found = findAuthEntry(config, registry);
  if (found !== undefined) {
    const creds = credentialsFromEntry(found[1], found[0], path);
    if (creds !== undefined) return creds;
  }
  if (typeof config.credsStore === 'string' && config.credsStore !== '') {
    return runCredentialHelper(config.credsStore, configKey(registry), options);
  }
  return undefined;
}

const HELPER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const HELPER_TIMEOUT_MS = 30_000;

/** `docker-credential-NAME get` with the server URL on stdin; undefined when it has nothing stored. */
export async function runCredentialHelper(name: string, serverUrl: string, options: DockerConfigOptions = {}): Promise<Credentials | undefined> {
  const program = `docker-credential-${name}`;
  const what = `get credentials for ${normalizeRegistryName(serverUrl)} from ${program}`;
  if (!HELPER_NAME_RE.test(name)) throw new FerryError('USAGE', `${what}: bad credential helper name "${name}" in docker config`);
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(program, ['get'], { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'], timeout: HELPER_TIMEOUT_MS });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        reject(new FerryError('UNAUTHORIZED', `${what}: ${program} is not on PATH`, {
          hint: `install ${program}, or remove it from credsStore/credHelpers in ${dockerConfigPath(options)}`,
        }));
      } else reject(new FerryError('UNAUTHORIZED', `${what}: ${e.message}`, { cause: e }));
    });
    child.on('close', (c) => resolve({ code: c, stdout: out, stderr: err }));
    child.stdin.on('error', () => undefined); // a helper that exits without reading stdin: its exit status tells
    child.stdin.end(serverUrl);
  });
  if (code !== 0) {
    const said = `${stdout}\n${stderr}`.trim();
    if (/credentials not found/i.test(said)) return undefined;
    throw new FerryError('UNAUTHORIZED', `${what}: exit status ${String(code)}${said ? `: ${said.split('\n')[0]}` : ''}`, {
      hint: `check ${program}, or run 'ferry login ${normalizeRegistryName(serverUrl)}'`,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(stdout);
  } catch (err) {
    throw new FerryError('UNAUTHORIZED', `${what}: the helper's answer is not JSON`, { cause: err });
  }
  const v = value as Record<string, unknown>;
  if (typeof v.Username !== 'string' || typeof v.Secret !== 'string') {
    throw new FerryError('UNAUTHORIZED', `${what}: the helper's answer lacks Username/Secret`);
  }
  if (v.Username === '<token>') return { username: '', password: '', identityToken: v.Secret };
  return { username: v.Username, password: v.Secret };
}

/** Write `auths[key].auth` as `docker login` does, keeping the rest of the file; mode 0600, atomic. */
export async function storeCredentials(registry: string, creds: { username: string; password: string }, options: DockerConfigOptions = {}): Promise<string> {
  const path = dockerConfigPath(options);
  const config = await readDockerConfig(path);
  const auths = { ...(config.auths ?? {}) };
  const existing = findAuthEntry(config, registry);
  if (existing !== undefined) delete auths[existing[0]];
  auths[configKey(registry)] = { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') };
  await writeConfig(path, { ...config, auths });
  return path;
}

/** Remove the registry's `auths` entry; false when there was none. */
export async function removeCredentials(registry: string, options: DockerConfigOptions = {}): Promise<boolean> {
  const path = dockerConfigPath(options);
  const config = await readDockerConfig(path);
  const existing = findAuthEntry(config, registry);
  if (existing === undefined) return false;
  const auths = { ...(config.auths ?? {}) };
  delete auths[existing[0]];
  await writeConfig(path, { ...config, auths });
  return true;
}

async function writeConfig(path: string, config: DockerConfigFile): Promise<void> {
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new FerryError('IO_ERROR', `create ${dirname(path)}: ${messageOf(err)}`, { cause: err });
  }
  await writeFileAtomic(path, `${JSON.stringify(config, null, '\t')}\n`, 0o600);
}
