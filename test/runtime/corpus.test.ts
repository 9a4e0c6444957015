import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry } from '../helpers/ferry.js';
import { freePort } from '../helpers/net.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { mountsMentioning, waitFor } from './fixture.js';

/**
 * Real images from the realistic corpus (test/bench/corpus, built into $CORPUS_DIR as an OCI
 * layout): redis answers PING from the host, MariaDB initialises its datadir and answers SELECT 1,
 * java -version runs. Opt-in: FERRY_CORPUS=1 (the images are large and MariaDB takes a while).
 */
const corpus = process.env.CORPUS_DIR ?? '/var/tmp/ferry-corpus';
const enabled = process.env.FERRY_CORPUS === '1';
let work: string;
let root: string;

async function ferry(args: string[]): Promise<string> {
  const r = await runFerry(['--root', root, ...args]);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

async function ask(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => s.write(request));
    let out = '';
    s.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.endsWith('\r\n')) s.end();
    });
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

describe.skipIf(!enabled)('real images from the corpus (FERRY_CORPUS=1)', () => {
  beforeAll(async () => {
    if (!existsSync(join(corpus, 'oci-src', 'index.json'))) throw new Error(`no corpus at ${corpus}: build it with test/bench/corpus (see /work/shared/bench)`);
    work = await makeTempDir('rt-corpus');
    root = join(work, 'root');
    for (const image of ['redis-7', 'mysql-8', 'jdk-17']) await ferry(['import', '-q', `oci:${corpus}/oci-src:${image}`]);
  }, 300_000);
  afterAll(async () => {
    if (root === undefined) return;
    const ids = (await runFerry(['--root', root, 'ps', '-aq'])).stdout.split('\n').filter((l) => l !== '');
    if (ids.length > 0) await runFerry(['--root', root, 'rm', '-f', ...ids]);
    await removeDir(work);
  });

  it('redis answers PING from the host (host network), runs as its image user, stops on SIGTERM', async () => {
    const port = await freePort();
    await ferry(['run', '-d', '--name', 'redis', 'redis-7', 'redis-server', '--port', String(port), '--protected-mode', 'no']);
    await waitFor(async () => (await ferry(['logs', 'redis'])).includes('Ready to accept connections'), 30_000, 'redis');
    expect(await ask(port, 'PING\r\n')).toBe('+PONG\r\n');
    expect(await ferry(['exec', 'redis', 'sh', '-c', 'id -un; pwd'])).toBe('redis\n/var/lib/redis\n');
    await ferry(['stop', 'redis']);
    const ps = JSON.parse(await ferry(['ps', '-a', '--json'])) as Array<{ name: string; status: string; exitCode: number }>;
    expect(ps.find((c) => c.name === 'redis')).toMatchObject({ status: 'exited', exitCode: 0 });
    await ferry(['rm', 'redis']);
  });

  it('MariaDB (the mysql image) initialises its datadir and answers SELECT 1', async () => {
    const port = await freePort();
    await ferry(['run', '-d', '--name', 'db', '-e', 'MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1', 'mysql-8', 'mariadbd', `--port=${port}`]);
    // The entrypoint starts a temporary server to initialise, then the real one.
    await waitFor(async () => (await ferry(['logs', 'db'])).includes(`port: ${port}`), 180_000, 'mariadb');
    expect(await ferry(['exec', 'db', 'mariadb', '-uroot', '-h127.0.0.1', `-P${port}`, '-N', '-e', 'SELECT 1'])).toBe('1\n');
    await ferry(['rm', '-f', 'db']);
    expect(await mountsMentioning(root)).toEqual([]);
  }, 240_000);

  it('java -version runs in the JDK image', async () => {
    const r = await runFerry(['--root', root, 'run', '--rm', 'jdk-17']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/openjdk version "17\./);
  });
});
