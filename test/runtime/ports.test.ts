import { createSocket } from 'node:dgram';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { FERRY_BIN, REPO_ROOT } from '../helpers/ferry.js';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { addImage, setupRuntime, waitFor, type RuntimeFixture } from './fixture.js';

/**
 * --network private and -p (issue 14): the launcher binds the host's listeners before the
 * container starts and relays each connection into the container's own network namespace.
 * Only loopback traffic.
 */
let f: RuntimeFixture;
const run = promisify(execFile);

beforeAll(async () => {
  f = await setupRuntime('rt-ports', ['base']);
  const probe = join(f.work, 'probe');
  await run('cc', ['-static', '-O1', '-o', probe, join(REPO_ROOT, 'test', 'runtime', 'probe.c')]);
  await addImage(f, 'web', async (r) => {
    await copyFile(probe, join(r, 'probe'));
    await mkdir(join(r, 'bin'));
    for (const applet of ['httpd', 'wget']) await symlink('busybox', join(r, 'bin', applet));
    await mkdir(join(r, 'www'));
  }, { ExposedPorts: { '80/tcp': {} } });
});
afterAll(async () => {
  await f.cleanup();
});

async function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

async function answers(port: number): Promise<boolean> {
  return get(port).then(() => true, () => false);
}

function httpd(name: string): string[] {
  return ['web', 'sh', '-c', `echo ${name} > /www/index.html; exec httpd -f -p 80 -h /www`];
}

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(true));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
  });
}

describe('published ports', () => {
  it('two httpd containers on port 80 each, published on two host ports, answer with their own content; nothing is left after rm', async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    const a = (await f.ok(['run', '-d', '--network', 'private', '-p', `127.0.0.1:${p1}:80`, ...httpd('one')])).trim();
    const b = (await f.ok(['run', '-d', '-p', `${p2}:80`, ...httpd('two')])).trim();
    await waitFor(async () => (await answers(p1)) && (await answers(p2)), 10_000, 'both httpd');
    expect(await get(p1)).toBe('one\n');
    expect(await get(p2)).toBe('two\n');
    // Several requests in a row, each a new connection relayed into the namespace.
    for (let i = 0; i < 20; i++) expect(await get(i % 2 === 0 ? p1 : p2)).toBe(i % 2 === 0 ? 'one\n' : 'two\n');
    expect(await f.ok(['port', a])).toBe(`80/tcp -> 127.0.0.1:${p1}\n`);
    expect(await f.ok(['ps'])).toContain(`0.0.0.0:${p2}->80/tcp`);
    const ps = JSON.parse(await f.ok(['ps', '--json'])) as Array<{ id: string; network: string }>;
    expect(ps.find((c) => c.id === b)?.network).toBe('private');
    await f.ok(['stop', '-t', '2', a, b]);
    await f.ok(['rm', a, b]);
    expect(await listening(p1)).toBe(false);
    expect(await listening(p2)).toBe(false);
    // Nothing else either: no firewall rule is made, no veth; the namespace went with the container.
    for (const id of [a, b]) {
      for (const h of ['memory', 'devices', 'pids']) expect((await readdir(`/sys/fs/cgroup/${h}/ferry`).catch(() => [] as string[])).includes(id)).toBe(false);
    }
  });

  it('-p on a port already taken on the host fails before the container starts, naming the port', async () => {
    const port = await freePort();
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(port, '0.0.0.0', () => r()));
    try {
      const r = await f.ferry(['run', '--rm', '-p', `${port}:80`, ...httpd('x')]);
      expect(r.code).toBe(125);
      expect(r.stderr).toContain(`publish port 0.0.0.0:${port}/tcp: the port is already in use on the host`);
    } finally {
      blocker.close();
    }
  });

  it('-P publishes the image\'s ExposedPorts on a port the host picks; udp is relayed', async () => {
    const id = (await f.ok(['run', '-d', '-P', ...httpd('auto')])).trim();
    try {
      const line = (await f.ok(['port', id, '80'])).trim();
      const hostPort = Number(/:(\d+)$/.exec(line)?.[1]);
      expect(hostPort).toBeGreaterThan(0);
      await waitFor(async () => answers(hostPort), 10_000, 'httpd');
      expect(await get(hostPort)).toBe('auto\n');
    } finally {
      await f.ok(['rm', '-f', id]);
    }
    const udpPort = await freePort();
    const echo = (await f.ok(['run', '-d', '-p', `127.0.0.1:${udpPort}:5353/udp`, 'web', '/probe', 'udp-echo', '5353'])).trim();
    const sock = createSocket('udp4');
    try {
      const replies: string[] = [];
      sock.on('message', (m) => replies.push(m.toString()));
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
      await waitFor(async () => {
        sock.send('ping', udpPort, '127.0.0.1');
        await new Promise((r) => setTimeout(r, 200));
        return replies.includes('echo: ping');
      }, 10_000, 'the echoed datagram');
    } finally {
      sock.close();
      await f.ok(['rm', '-f', echo]);
    }
  });

  it('-p with --network host is a usage error', async () => {
    const r = await f.ferry(['run', '--rm', '--network', 'host', '-p', '8080:80', 'base', 'true']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ports are published only from a private network/);
    const bad = await f.ferry(['run', '--rm', '-p', '99999:80', 'base', 'true']);
    expect(bad.code).toBe(2);
  });

  it('--network container:NAME shares that container\'s namespace: its loopback services and its published ports', async () => {
    const port = await freePort();
    const web = (await f.ok(['run', '-d', '--name', 'pod-web', '-p', `127.0.0.1:${port}:80`, ...httpd('pod')])).trim();
    try {
      await waitFor(async () => answers(port), 10_000, 'httpd');
      // A second container reaches the first on its own loopback, as the containers of a pod do.
      const out = await f.ok(['run', '--rm', '--network', 'container:pod-web', 'web', 'sh', '-c', 'wget -q -O - http://127.0.0.1:80/']);
      expect(out).toBe('pod\n');
      const stopped = await f.ferry(['run', '--rm', '--network', 'container:nope', 'base', 'true']);
      expect(stopped.code).not.toBe(0);
      expect(stopped.stderr).toMatch(/nope/);
    } finally {
      await f.ok(['rm', '-f', web]);
    }
  });

  it('--network none has loopback only', async () => {
    const out = await f.ok(['run', '--rm', '--network', 'none', 'web', 'sh', '-c', 'cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d " " | sort']);
    expect(out).toBe('lo\n');
  });

  it('a private network reaches out through slirp4netns (no host rule, nothing left after rm); the host\'s loopback services stay out of reach', async () => {
    // The "outside world" is a network namespace of the test's own with a non-127 address and an
    // httpd on it; ferry runs inside that namespace (nsenter --net only, so the host's /sys and
    // cgroups stay visible), and so does the slirp4netns its launcher starts.
    const ns = `ferry-up-${process.pid}`;
    const outside = '10.213.7.1';
    const www = join(f.work, 'outside-www');
    await mkdir(www, { recursive: true });
    await writeFile(join(www, 'index.html'), 'from outside\n');
    await run('ip', ['netns', 'add', ns]);
    const inNs = (cmd: string, ...args: string[]) => run('nsenter', [`--net=/run/netns/${ns}`, cmd, ...args]);
    try {
      await inNs('ip', 'link', 'set', 'lo', 'up');
      await inNs('ip', 'addr', 'add', `${outside}/32`, 'dev', 'lo'); // an address beyond loopback's 127/8
      await inNs('busybox', 'httpd', '-p', `${outside}:8080`, '-h', www);
      await inNs('busybox', 'httpd', '-p', '127.0.0.1:8081', '-h', www); // the "host's" loopback service
      const ferryIn = (args: string[]) => run('nsenter', [`--net=/run/netns/${ns}`, process.execPath, FERRY_BIN, '--root', f.root, ...args]);
      // nc, not wget: this static busybox's wget crashes resolving a non-loopback address (its libc's NSS).
      const get = (host: string, port: number) => `printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 ${host} ${port} | tail -n 1`;
      const { stdout } = await ferryIn(['run', '--rm', '--network', 'private', 'web', 'sh', '-c',
        `cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d " " | sort | tr "\\n" " "; echo; grep nameserver /etc/resolv.conf; ${get(outside, 8080)}; ${get('10.0.2.2', 8081)}; echo end`]);
      expect(stdout).toBe('lo tap0 \nnameserver 10.0.2.3\nfrom outside\nend\n');
      // -d, then rm: the slirp4netns of the container is gone with it.
      const id = (await ferryIn(['run', '-d', '--network', 'private', 'web', 'sleep', '60'])).stdout.trim();
      await waitFor(async () => (await slirpProcesses(ns)).length === 1, 10_000, 'slirp4netns of the container');
      await ferryIn(['rm', '-f', id]);
      await waitFor(async () => (await slirpProcesses(ns)).length === 0, 10_000, 'slirp4netns to end with the container');
    } finally {
      await run('ip', ['netns', 'pids', ns]).then(({ stdout }) => { for (const pid of stdout.split('\n').filter((l) => l !== '')) process.kill(Number(pid), 'SIGKILL'); });
      await run('ip', ['netns', 'del', ns]);
    }
  });
});

/** slirp4netns processes in the network namespace `ns` (it runs there: the "host" side). */
async function slirpProcesses(ns: string): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'pids', ns]);
  const names = await Promise.all(stdout.split('\n').filter((l) => l !== '').map(async (pid) => (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim()));
  return names.filter((n) => n === 'slirp4netns');
}
