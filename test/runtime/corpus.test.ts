import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { readFile } from 'node:fs/promises';
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

  it('MariaDB as a service: -d --restart always -v dbdata:/var/lib/mysql; kill -9 of mariadbd from the host: back within 2 s with the table; stop keeps it down; a new container on the volume has the table; rm -v drops an anonymous volume', async () => {
    const port = await freePort();
    const sql = (name: string, query: string): Promise<string> => ferry(['exec', name, 'mariadb', '-uroot', '-h127.0.0.1', `-P${port}`, '-N', '-e', query]);
    const t0 = Date.now();
    await ferry([
      'run', '-d', '--name', 'svcdb', '--restart', 'always', '-v', 'dbdata:/var/lib/mysql', '-e', 'MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1',
      '--health-cmd', `mariadb -uroot -h127.0.0.1 -P${port} -e "SELECT 1"`, '--health-interval', '1s', '--health-start-period', '120s',
      'mysql-8', 'mariadbd', `--port=${port}`,
    ]);
    await waitFor(async () => (await ferry(['ps'])).includes('(healthy)'), 180_000, 'mariadb healthy');
    const ready = Date.now() - t0;
    await sql('svcdb', 'CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT); INSERT INTO shop.items VALUES (1, \'ferry\')');
    const inspect = async (): Promise<{ State: { Pid: number; Running: boolean; Restarting: boolean }; RestartCount: number }> =>
      (JSON.parse(await ferry(['inspect', 'svcdb'])) as Array<{ State: { Pid: number; Running: boolean; Restarting: boolean }; RestartCount: number }>)[0]!;
    const init = (await inspect()).State.Pid;
    // mariadbd is the command ferry's init started (the entrypoint execs it): init's one child.
    const child = Number((await readFile(`/proc/${init}/task/${init}/children`, 'utf8')).trim().split(' ')[0]);
    expect((await readFile(`/proc/${child}/comm`, 'utf8')).trim()).toBe('mariadbd');
    process.kill(child, 'SIGKILL');
    const killed = Date.now();
    await waitFor(async () => {
      const s = await inspect();
      return s.State.Running && !s.State.Restarting && s.State.Pid !== init;
    }, 2000, 'the restart');
    const back = Date.now() - killed;
    await waitFor(async () => (await runFerry(['--root', root, 'exec', 'svcdb', 'mariadb', '-uroot', '-h127.0.0.1', `-P${port}`, '-e', 'SELECT 1'])).code === 0, 120_000, 'mariadb answering again');
    const answering = Date.now() - killed;
    expect(await sql('svcdb', 'SELECT name FROM shop.items WHERE id = 1')).toBe('ferry\n');
    expect((await inspect()).RestartCount).toBe(1);
    console.log(`mariadb service: healthy after ${ready} ms; after kill -9 running again in ${back} ms, answering in ${answering} ms`);

    await ferry(['stop', 'svcdb']);
    await new Promise((r) => setTimeout(r, 2000));
    expect((await inspect()).State.Running).toBe(false);
    await ferry(['rm', 'svcdb']);
    expect(await ferry(['volume', 'ls', '-q'])).toContain('dbdata\n');

    await ferry(['run', '-d', '--name', 'db2', '-v', 'dbdata:/var/lib/mysql', 'mysql-8', 'mariadbd', `--port=${port}`]);
    await waitFor(async () => (await runFerry(['--root', root, 'exec', 'db2', 'mariadb', '-uroot', '-h127.0.0.1', `-P${port}`, '-e', 'SELECT 1'])).code === 0, 120_000, 'the second server');
    expect(await sql('db2', 'SELECT name FROM shop.items WHERE id = 1')).toBe('ferry\n');
    await ferry(['rm', '-f', 'db2']);

    // The image's VOLUME without -v: an anonymous volume, which rm -v removes.
    await ferry(['run', '--name', 'anon', '--entrypoint', 'true', 'mysql-8']);
    const [anon] = JSON.parse(await ferry(['inspect', 'anon'])) as Array<{ Mounts: Array<{ Name: string; Destination: string }> }>;
    const volume = anon!.Mounts.find((m) => m.Destination === '/var/lib/mysql')!.Name;
    expect(await ferry(['volume', 'ls', '-q'])).toContain(`${volume}\n`);
    await ferry(['rm', '-v', 'anon']);
    expect(await ferry(['volume', 'ls', '-q'])).not.toContain(volume);
    expect(await ferry(['volume', 'ls', '-q'])).toContain('dbdata\n');
    await ferry(['volume', 'rm', 'dbdata']);
  }, 600_000);

  it('java -version runs in the JDK image', async () => {
    const r = await runFerry(['--root', root, 'run', '--rm', 'jdk-17']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/openjdk version "17\./);
  });
});
