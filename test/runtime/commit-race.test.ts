import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { lstat, mkdir, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pauseContainer } from '../../src/runtime/pause.js';
import { openStore, openStoreImage } from '../../src/store/index.js';
import { ferryWithin } from '../helpers/ferry.js';
import { setupRuntime, sleep, waitFor, type RuntimeFixture } from './fixture.js';

/**
 * Security issue 10, item 2: `commit` (and `diff`) of a running container that swaps its files
 * for device nodes, FIFOs and symlinks to host paths while they are read. The old layer writer
 * lstat'ed, then opened and listed by path: it read host disk bytes through a swapped-in block
 * device, listed and copied the host's /etc through a directory swapped for a symlink, and hung on
 * a FIFO. The container here swaps hundreds of times while each commit runs (--pause=false, so
 * the race really happens); then, with the default --pause, its processes are stopped during the
 * commit and resumed after.
 */
const run = promisify(execFile);
let f: RuntimeFixture;
/** A host directory the container's symlinks point at: its names and bytes must never show up. */
let hostDir: string;
const HOST_NAME = 'host-only-name-5c1e';
const HOST_BYTES = 'HOST-SECRET-BYTES-9d2b';
/** The loop device's backing file is full of this byte ('H'). */
const DISK_BYTE = 0x48;
let loop: { path: string; major: number; minor: number } | undefined;
let counts: string;
const N = 6;


/** A counter the container replaces (by rename: a stopped writer never leaves it half written). */
async function readCount(name: string): Promise<number> {
  const text = await readFile(join(counts, name), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '0'; // not started yet
    throw err;
  });
  return Number(text.trim());
}

/**
 * The racing container: /race/r<i> alternates between its own small file and a /dev/zero node,
 * a node of the host's loop device, a FIFO and a symlink to a host file; /race/r<i>d between its
 * own directory and symlinks to the host's /etc and to hostDir. 1 MiB of random bytes between
 * them (r<i>p) makes the walk slow enough to meet the swaps. /count/n counts rounds (8 swaps of
 * each name a round).
 */
function racingScript(): string {
  const ids = Array.from({ length: N }, (_, i) => i).join(' ');
  const dev = loop === undefined ? '' : `busybox mknod b b ${loop.major} ${loop.minor}; mv -f b r$i; echo own-file-$i > t; mv -f t r$i;`;
  return [
    'mkdir -p /race && cd /race',
    `for i in ${ids}; do echo own-file-$i > r$i; mkdir r\${i}d; echo own-dir-$i > r\${i}d/own; head -c 1048576 /dev/urandom > r\${i}p; echo stable-$i > stable-$i; done`,
    'n=0',
    'while true; do',
    `  for i in ${ids}; do`,
    '    busybox mknod z c 1 5; mv -f z r$i; echo own-file-$i > t; mv -f t r$i;',
    `    ${dev}`,
    '    busybox mkfifo p; mv -f p r$i; echo own-file-$i > t; mv -f t r$i;',
    `    ln -s ${hostDir}/${HOST_NAME} l; mv -f l r$i; echo own-file-$i > t; mv -f t r$i;`,
    `    mv r\${i}d D; ln -s /etc r\${i}d; rm r\${i}d; ln -s ${hostDir} r\${i}d; rm r\${i}d; mv D r\${i}d;`,
    '  done',
    '  n=$((n+1)); echo $n > /count/n.t; mv -f /count/n.t /count/n',
    'done',
  ].join('\n');
}

/** Unpack the last layer of `ref` with GNU tar; returns the directory. */
async function unpackTopLayer(ref: string, dir: string): Promise<string> {
  const store = await openStore({ root: f.root });
  const image = await openStoreImage(store, ref);
  const tarPath = `${dir}.tar`;
  await pipeline(await image.layers.at(-1)!.tar(), createWriteStream(tarPath));
  await mkdir(dir);
  await run('tar', ['--numeric-owner', '-xpf', tarPath, '-C', dir]);
  return dir;
}

/** Every problem in an unpacked layer: host names, host bytes, files that are not the container's. */
async function hostTraces(dir: string): Promise<string[]> {
  const problems: string[] = [];
  const hostEtc = new Set(await readdir('/etc'));
  const walk = async (rel: string): Promise<void> => {
    for (const name of await readdir(join(dir, rel))) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const path = join(dir, childRel);
      const st = await lstat(path);
      if (name === HOST_NAME) problems.push(`${childRel}: a host file's name`);
      if (/^race\/r\d+d\/./.test(childRel) && childRel.split('/')[2] !== 'own') problems.push(`${childRel}: listed through a symlink (host /etc has ${hostEtc.has(name) ? 'it' : 'no such name'})`);
      if (st.isDirectory()) {
        await walk(childRel);
        continue;
      }
      if (!st.isFile()) continue;
      const bytes = await readFile(path);
      if (bytes.includes(HOST_BYTES)) problems.push(`${childRel}: holds the host file's bytes`);
      if (bytes.length > 0 && bytes.every((b) => b === 0)) problems.push(`${childRel}: zeros (read through a /dev/zero node)`);
      if (bytes.length >= 64 && bytes.subarray(0, 64).every((b) => b === DISK_BYTE)) problems.push(`${childRel}: the host disk's bytes`);
      const m = /^race\/r(\d+)$/.exec(childRel) ?? /^race\/t$/.exec(childRel);
      if (m !== null && !/^own-file-\d+\n$/.test(bytes.toString())) problems.push(`${childRel}: not the container's content (${JSON.stringify(bytes.subarray(0, 40).toString())})`);
    }
  };
  await walk('');
  return problems;
}

beforeAll(async () => {
  f = await setupRuntime('rt-commit-race', ['base']);
  hostDir = join(f.work, 'host-secret');
  await mkdir(hostDir);
  await writeFile(join(hostDir, HOST_NAME), `${HOST_BYTES}\n`);
  await writeFile(join(hostDir, 'passwd'), `${HOST_BYTES}\n`);
  counts = join(f.work, 'counts');
  await mkdir(counts);
  const file = join(f.work, 'disk.img');
  await writeFile(file, Buffer.alloc(1 << 20, DISK_BYTE));
  const { stdout } = await run('losetup', ['-f', '--show', file]);
  const path = stdout.trim();
  const { stdout: numbers } = await run('stat', ['-c', '%t %T', path]);
  const [major, minor] = numbers.trim().split(' ').map((h) => parseInt(h, 16)) as [number, number];
  loop = { path, major, minor };
});
afterAll(async () => {
  await f.cleanup();
  if (loop !== undefined) await run('losetup', ['-d', loop.path]);
});

describe('commit of a container racing it (--pause=false)', () => {
  it('swapping files for /dev/zero, a host loop device, FIFOs and symlinks to host /etc: no host bytes or names in the layer, no hang; the image has its own files', async () => {
    await f.ok(['run', '-d', '--name', 'racer', '-u', '0', '-v', `${counts}:/count`, 'base', 'sh', '-c', racingScript()]);
    await waitFor(async () => (await readCount('n')) >= 1, 30_000, 'the first round of swaps');
    let swapsDuringCommits = 0;
    const layers: string[] = [];
    for (let k = 0; k < 8 && (k < 3 || swapsDuringCommits < 400); k++) {
      const before = await readCount('n');
      const r = await ferryWithin(f.root, 60_000, ['commit', k % 2 === 0 ? '--pause=false' : '-p=false', 'racer', `raced:${k}`]);
      const after = await readCount('n');
      expect(r.timedOut, `commit ${k} hung`).toBe(false);
      expect(r.code, r.stderr).toBe(0);
      swapsDuringCommits += (after - before) * N * 8;
      layers.push(`raced:${k}`);
    }
    // Hundreds of swaps happened while the commits read the files.
    expect(swapsDuringCommits).toBeGreaterThanOrEqual(300);
    for (const [k, ref] of layers.entries()) {
      const dir = await unpackTopLayer(ref, join(f.work, `layer-${k}`));
      expect(await hostTraces(dir), ref).toEqual([]);
      // The container's own files are there, as it wrote them.
      for (let i = 0; i < N; i++) expect(await readFile(join(dir, 'race', `stable-${i}`), 'utf8')).toBe(`stable-${i}\n`);
      // Its own symlinks stay symlinks: their text, never what they point at.
      for (const name of await readdir(join(dir, 'race'))) {
        const st = await lstat(join(dir, 'race', name));
        if (st.isSymbolicLink()) expect(['/etc', hostDir, `${hostDir}/${HOST_NAME}`]).toContain(await readlink(join(dir, 'race', name)));
      }
    }
    expect(await f.ok(['run', '--rm', 'raced:0', 'sh', '-c', 'cat /race/stable-0 /race/stable-5'])).toBe('stable-0\nstable-5\n');
  });

  it('diff of the racing container never names host paths or host files', async () => {
    for (let k = 0; k < 10; k++) {
      const r = await ferryWithin(f.root, 60_000, ['diff', 'racer']);
      expect(r.timedOut).toBe(false);
      expect(r.stderr).not.toContain(f.work);
      expect(r.stderr).not.toContain(f.root);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).not.toContain(HOST_NAME);
      expect(r.stdout).not.toMatch(/\/race\/r\d+d\/(?!own\n)/);
      expect(r.stdout).toContain('A /race/stable-0');
    }
    await f.ok(['rm', '-f', 'racer']);
  });
});

/** The container's processes: those in the PID namespace of its init. */
async function containerPids(initPid: number): Promise<number[]> {
  const ns = await readlink(`/proc/${initPid}/ns/pid`);
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const theirs = await readlink(`/proc/${name}/ns/pid`).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT" || err.code === "ESRCH" || err.code === "EACCES") return undefined;
      throw err;
    });
    if (theirs === ns) out.push(Number(name));
  }
  return out;
}

/** The state letter in /proc/PID/stat; "gone" when it exited (the loop's short-lived mv). */
async function stateOf(pid: number): Promise<string> {
  const text = await readFile(`/proc/${pid}/stat`, 'latin1').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return ') gone';
    throw err;
  });
  if (text === ') gone') return 'gone';
  return text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3);
}

async function initPidOf(name: string): Promise<number> {
  const entries = JSON.parse(await f.ok(['ps', '--json'])) as Array<{ name: string; pid: number | null }>;
  const pid = entries.find((e) => e.name === name)?.pid;
  if (pid === undefined || pid === null) throw new Error(`container ${name} has no pid`);
  return pid;
}

/** Is the counter the container increments standing still (over 300 ms)? */
async function counterStopped(name: string): Promise<boolean> {
  const a = await readCount(name);
  await sleep(300);
  return (await readCount(name)) === a;
}

describe('commit --pause (the default)', () => {
  const busy = (file: string): string => `sleep 1000 & head -c 50000000 /dev/urandom > /big; n=0; while true; do n=$((n+1)); echo $n > /count/${file}.t; mv -f /count/${file}.t /count/${file}; done`;

  it("the container's processes are stopped during the commit and run again after it", async () => {
    await f.ok(['run', '-d', '--name', 'paused', '-u', '0', '-v', `${counts}:/count`, 'base', 'sh', '-c', busy('p')]);
    await waitFor(async () => (await readCount('p')) > 10, 30_000, 'the counter');
    const commit = ferryWithin(f.root, 120_000, ['commit', 'paused', 'paused:1']);
    // While ferry commit reads the 50 MB file, the counter stands still.
    let sawStopped = false;
    const deadline = Date.now() + 60_000;
    while (!sawStopped && Date.now() < deadline) sawStopped = await counterStopped('p');
    const r = await commit;
    expect(r.code, r.stderr).toBe(0);
    expect(sawStopped).toBe(true);
    // And it runs again afterwards.
    expect(await counterStopped('p')).toBe(false);
    const pid = await initPidOf('paused');
    for (const p of await containerPids(pid)) expect(await stateOf(p)).not.toBe('T');
    expect(await f.ok(['run', '--rm', 'paused:1', 'sh', '-c', 'wc -c < /big'])).toBe('50000000\n');
  });

  it('without a freezer: SIGSTOP to every process of its PID namespace, SIGCONT after; with a v1 or v2 freezer cgroup: frozen and thawed', async () => {
    const pid = await initPidOf('paused');
    const pids = await containerPids(pid);
    expect(pids.length).toBeGreaterThanOrEqual(3); // init, sh, sleep
    const resume = await pauseContainer(pid, { what: 'container paused' });
    try {
      for (const p of pids) expect(['T', 'Z', 'gone']).toContain(await stateOf(p));
      // Including what it started while we stopped the others (the loop forks mv).
      for (const p of await containerPids(pid)) expect(await stateOf(p)).toMatch(/^(T|Z|gone)$/);
      expect(await counterStopped('p')).toBe(true);
    } finally {
      await resume();
    }
    for (const p of pids) expect(await stateOf(p)).not.toBe('T');
    expect(await counterStopped('p')).toBe(false);

    const id = (JSON.parse(await f.ok(['ps', '--json'])) as Array<{ name: string; id: string }>).find((e) => e.name === 'paused')!.id;
    const freezers = [`/sys/fs/cgroup/freezer/ferry/${id}`, `/sys/fs/cgroup/unified/ferry/${id}`, `/sys/fs/cgroup/ferry/${id}`];
    let tried = 0;
    for (const freezer of freezers) {
      const procs = await readFile(join(freezer, 'cgroup.procs'), 'utf8').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return ''; // no such hierarchy on this host
        throw err;
      });
      if (!procs.split('\n').includes(String(pid))) continue;
      tried++;
      const thaw = await pauseContainer(pid, { freezer, what: 'container paused' });
      try {
        expect(await counterStopped('p'), freezer).toBe(true);
      } finally {
        await thaw();
      }
      expect(await counterStopped('p'), freezer).toBe(false);
    }
    expect(tried).toBeGreaterThan(0);
    await f.ok(['rm', '-f', 'paused']);
  });
});
