import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, waitForHttp } from './net.js';
import { spawnGuarded, type GuardedProcess } from './processes.js';
import { makeTempDir, removeDir } from './tmp.js';
import { startTokenServer, type TokenRequest, type TokenServer } from './token-server.js';

const run = promisify(execFile);

export type RegistryAuth = 'none' | 'basic' | 'token';

export interface RunningRegistry {
  host: string;            // '127.0.0.1:PORT'
  auth: RegistryAuth;
  username: string | undefined;  // for basic and token
  password: string | undefined;
  storageDir: string;
  /**
   * the registry's log so far (access log on: tests count blob GETs from it, see accessLog()).
   * Every request made before the call is in it. After stop(), the whole log.
   */
  log(): Promise<string>;
  stop(): Promise<void>;
  /**
   * token variant only: a second user who is granted `pull` and nothing else, so a push with
   * these credentials is denied (403/401) while a pull works.
   */
  readOnlyUser: { username: string; password: string } | undefined;
  /** token variant only: every request the token server answered, in order. */
  tokenRequests: TokenRequest[] | undefined;
  /** token variant only: the realm URL the registry advertises. */
  tokenRealm: string | undefined;
}

export interface StartRegistryOptions {
  auth?: RegistryAuth;
  /** token variant: lifetime of issued tokens in seconds (default 300). */
  tokenTtlSeconds?: number;
}

const USERNAME = 'ferry';
const PASSWORD = 'ferry-secret-pw';
const READER = { username: 'reader', password: 'reader-secret-pw' };

/**
 * Start Debian's docker-registry (CNCF distribution 2.8) on a free loopback port with a fresh
 * storage directory, open, behind basic auth (bcrypt htpasswd) or behind bearer-token auth served
 * by an in-process token server. Resolves once `GET /v2/` answers. The access log is on.
 */
export async function startRegistry(options: StartRegistryOptions = {}): Promise<RunningRegistry> {
  const auth = options.auth ?? 'none';
  // The port is chosen by binding port 0 and released before the registry takes it: another
  // process may grab it in between, so a start that finds the port taken is tried again.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(auth, options);
    } catch (err) {
      lastError = err;
      if (!(err instanceof PortTakenError)) throw err;
    }
  }
  throw lastError;
}

class PortTakenError extends Error {}

async function startOnce(auth: RegistryAuth, options: StartRegistryOptions): Promise<RunningRegistry> {
  const dir = await makeTempDir(`registry-${auth}`);
  const storageDir = join(dir, 'storage');
  await mkdir(storageDir);
  let tokenServer: TokenServer | undefined;
  let proc: GuardedProcess | undefined;
  try {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const authConfig: string[] = [];
    if (auth === 'basic') {
      const { stdout } = await run('htpasswd', ['-Bbn', USERNAME, PASSWORD]);
      const htpasswd = join(dir, 'htpasswd');
      await writeFile(htpasswd, stdout.trim() + '\n');
      authConfig.push('auth:', '  htpasswd:', '    realm: ferry-test-basic', `    path: ${htpasswd}`);
    } else if (auth === 'token') {
      tokenServer = await startTokenServer({
        dir,
        users: {
          [USERNAME]: { password: PASSWORD },
          [READER.username]: { password: READER.password, actions: ['pull'] },
        },
        ...(options.tokenTtlSeconds === undefined ? {} : { ttlSeconds: options.tokenTtlSeconds }),
      });
      authConfig.push(
        'auth:',
        '  token:',
        `    realm: ${tokenServer.url}`,
        `    service: ${tokenServer.service}`,
        `    issuer: ${tokenServer.issuer}`,
        `    rootcertbundle: ${tokenServer.certFile}`,
      );
    }
    const config = [
      'version: 0.1',
      'log:',
      '  level: info',
      '  accesslog:',
      '    disabled: false',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storageDir}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: ${host}`,
      '  secret: ferry-test-http-secret',
      ...authConfig,
      '',
    ].join('\n');
    const configFile = join(dir, 'config.yml');
    await writeFile(configFile, config);

    const started = await spawnGuarded('registry', 'docker-registry', ['serve', configFile], dir);
    proc = started;
    await waitForHttp(`http://${host}/v2/`, {
      failed: () => {
        const code = started.exitCode();
        return code === undefined ? undefined : `docker-registry exited with code ${String(code)}`;
      },
    }).catch(async (err: unknown) => {
      const log = await readFile(started.logFile, 'utf8');
      if (/address already in use/.test(log)) throw new PortTakenError(`port ${port} taken`);
      throw new Error(`docker-registry did not start:\n${log}`, { cause: err });
    });

    let stopped = false;
    let finalLog: string | undefined;
    let syncs = 0;
    const server = tokenServer;
    // The access log line is written just after the response went out, so a test that reads the
    // log right after its last request could miss that line. A marker request, sent after the
    // test's requests completed, is waited for in the log first.
    const readLog = async (): Promise<string> => {
      if (finalLog !== undefined) return finalLog;
      const marker = `ferry-log-sync=${++syncs}`;
      const response = await fetch(`http://${host}/v2/?${marker}`);
      await response.arrayBuffer();
      const deadline = Date.now() + 5_000;
      for (;;) {
        const text = await readFile(started.logFile, 'utf8');
        if (text.includes(marker) || Date.now() > deadline) return text;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };
    return {
      host,
      auth,
      username: auth === 'none' ? undefined : USERNAME,
      password: auth === 'none' ? undefined : PASSWORD,
      storageDir,
      readOnlyUser: auth === 'token' ? { ...READER } : undefined,
      tokenRequests: server?.requests,
      tokenRealm: server?.url,
      log: readLog,
      async stop() {
        if (stopped) return;
        stopped = true;
        await started.stop();
        finalLog = await readFile(started.logFile, 'utf8');
        await server?.stop();
        await removeDir(dir);
      },
    };
  } catch (err) {
    await proc?.stop();
    await tokenServer?.stop();
    await removeDir(dir);
    throw err;
  }
}

export interface AccessLogEntry {
  method: string;
  /** Path plus query string, as requested. */
  path: string;
  status: number;
}

/** The access-log lines (combined log format) of a registry log, in order. */
export function accessLog(log: string): AccessLogEntry[] {
  const entries: AccessLogEntry[] = [];
  for (const m of log.matchAll(/^\S+ - \S+ \[[^\]]+\] "(\S+) (\S+) HTTP\/[\d.]+" (\d{3}) /gm)) {
    entries.push({ method: m[1]!, path: m[2]!, status: Number(m[3]) });
  }
  return entries;
}

/** How many times a blob was fetched (GET, 200 or 206) from any repository of the registry. */
export function countBlobGets(log: string, digest: string): number {
  return accessLog(log).filter(
    (e) => e.method === 'GET' && e.path.endsWith(`/blobs/${digest}`) && (e.status === 200 || e.status === 206),
  ).length;
}
