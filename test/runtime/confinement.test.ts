import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FERRY_BIN, REPO_ROOT } from '../helpers/ferry.js';
import { addImage, setupRuntime, sha256, waitFor, type RuntimeFixture } from './fixture.js';

/**
 * What a container must not reach on the host (security issue 10: devices, keyrings, seccomp,
 * capabilities, masked paths, file volumes). The `probe` image is busybox plus a static program
 * (probe.c) that makes one system call per subcommand and prints "ok" or the errno name.
 */
const run = promisify(execFile);
let f: RuntimeFixture;
let probe: string;

beforeAll(async () => {
  f = await setupRuntime('rt-confine', ['base']);
  probe = join(f.work, 'probe');
  await run('cc', ['-static', '-O1', '-o', probe, join(REPO_ROOT, 'test', 'runtime', 'probe.c')]);
  await addImage(f, 'probe', async (r) => {
    await copyFile(probe, join(r, 'probe'));
    await mkdir(join(r, 'mnt'));
  });
}, 120_000);
afterAll(async () => {
  await f.cleanup();
});

/** A loop device over a file of known bytes, detached afterwards. */
async function withLoopDevice(fn: (dev: { major: number; minor: number; file: string; before: string }) => Promise<void>): Promise<void> {
  const file = join(f.work, `loop-${Date.now()}.img`);
  await writeFile(file, Buffer.alloc(1 << 20, 0x5a));
  const before = sha256(await readFile(file));
  const { stdout } = await run('losetup', ['-f', '--show', file]);
  const path = stdout.trim();
  try {
    const { stdout: numbers } = await run('stat', ['-c', '%t %T', path]);
    const [major, minor] = numbers.trim().split(' ').map((h) => parseInt(h, 16)) as [number, number];
    await fn({ major, minor, file, before });
  } finally {
    await run('losetup', ['-d', path]);
  }
}

/** Make a block node for the device in `dir` (in the container), then read and overwrite it. */
function attackScript(dir: string, major: number, minor: number): string {
  return [
    `mknod ${dir}/disk b ${major} ${minor} && echo made`,
    `dd if=${dir}/disk bs=512 count=1 2>/dev/null | head -c 4 | grep -q ZZZZ && echo READ-HOST-DISK`,
    `echo OWNED | dd of=${dir}/disk conv=notrunc 2>/dev/null && echo WROTE-HOST-DISK`,
    `mknod ${dir}/mem c 1 1 && echo made-mem`,
    `head -c 1 ${dir}/mem >/dev/null 2>&1 && echo OPENED-MEM`,
    'true',
  ].join('; ');
}

describe('devices', () => {
  it('mknod of a host block device on a read-write -v volume cannot read or write the host disk', async () => {
    const vol = join(f.work, 'vol-dev');
    await withLoopDevice(async ({ major, minor, file, before }) => {
      const r = await f.ferry(['run', '--rm', '-v', `${vol}:/vol`, 'base', 'sh', '-c', attackScript('/vol', major, minor)]);
      expect(r.stdout).not.toMatch(/READ-HOST-DISK|WROTE-HOST-DISK|OPENED-MEM/);
      expect(sha256(await readFile(file))).toBe(before);
    });
  });

  it('mknod of a host block device on a --tmpfs cannot read or write the host disk', async () => {
    await withLoopDevice(async ({ major, minor, file, before }) => {
      const r = await f.ferry(['run', '--rm', '--tmpfs', '/scratch:size=1m', 'base', 'sh', '-c', attackScript('/scratch', major, minor)]);
      expect(r.stdout).not.toMatch(/READ-HOST-DISK|WROTE-HOST-DISK|OPENED-MEM/);
      expect(sha256(await readFile(file))).toBe(before);
    });
  });

  it('volumes and tmpfs mounts are nodev and nosuid (suid only when asked); /dev/null still works', async () => {
    const vol = join(f.work, 'vol-flags');
    const out = await f.ok([
      'run', '--rm', '-v', `${vol}:/vol`, '-v', `${vol}:/vol-suid:suid`, '--tmpfs', '/scratch', 'base', 'sh', '-c',
      'for m in /vol /vol-suid /scratch; do grep " $m " /proc/self/mountinfo | cut -d" " -f6; done; echo hi > /dev/null && echo null-ok',
    ]);
    const [vol1, vol2, tmp, last] = out.trim().split('\n');
    expect(vol1).toMatch(/nosuid/);
    expect(vol1).toMatch(/nodev/);
    expect(vol2).not.toMatch(/nosuid/);
    expect(vol2).toMatch(/nodev/);
    expect(tmp).toMatch(/nosuid,nodev,noexec/);
    expect(last).toBe('null-ok');
  });

  it('"dev" is refused on volumes and tmpfs mounts', async () => {
    const r1 = await f.ferry(['run', '--rm', '-v', `${f.work}:/x:dev`, 'base', 'true']);
    expect(r1.code).toBe(2);
    expect(r1.stderr).toMatch(/"dev" is refused/);
    const r2 = await f.ferry(['run', '--rm', '--tmpfs', '/x:dev', 'base', 'true']);
    expect(r2.code).toBe(2);
  });

  it('the device cgroup allows only docker\'s standard nodes while the container runs', async () => {
    const devices = '/sys/fs/cgroup/devices';
    if (!existsSync(join(devices, 'devices.list'))) return; // a v2-only host: nodev mounts are the control there
    const id = (await f.ok(['run', '-d', 'base', 'sleep', '30'])).trim();
    try {
      const list = join(devices, 'ferry', id, 'devices.list');
      await waitFor(async () => existsSync(list), 5000, 'the container cgroup');
      const rules = (await readFile(list, 'utf8')).trim().split('\n').sort();
      expect(rules).toContain('c 1:3 rwm');
      expect(rules).toContain('b *:* m');
      expect(rules).not.toContain('a *:* rwm');
      expect(rules.filter((r) => r.startsWith('b ') && r !== 'b *:* m')).toEqual([]);
      const pid = JSON.parse(await readFile(join(f.root, 'containers', id, 'state.json'), 'utf8')) as { pid: number };
      expect(await readFile(join(devices, 'ferry', id, 'cgroup.procs'), 'utf8')).toContain(`${pid.pid}\n`);
    } finally {
      await f.ok(['rm', '-f', id]);
    }
    expect(existsSync(join(devices, 'ferry', id))).toBe(false);
  });
});

describe('keyrings and seccomp', () => {
  it('a key the host added to ferry\'s session keyring is not in the container\'s (fresh session keyring)', async () => {
    // Sanity: on the host the probe finds the key it added.
    const host = await run(probe, ['host-key', 'ferry-test-secret', 's3cret', '--', probe, 'keyring-find', 'ferry-test-secret']);
    expect(host.stdout).toBe('ok\n');
    // Unconfined, so keyctl itself is allowed: only the fresh keyring keeps the key out.
    // The probe exits 1 when the search fails, and ferry with it: read its output either way.
    const r = await run(probe, [
      'host-key', 'ferry-test-secret', 's3cret', '--', process.execPath, FERRY_BIN, '--root', f.root,
      'run', '--rm', '--security-opt', 'seccomp=unconfined', 'probe', '/probe', 'keyring-find', 'ferry-test-secret',
    ]).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
    expect(r.stdout).toBe('ENOKEY\n');
  });

  it('docker\'s default profile: keyctl, add_key, unshare/clone of a user namespace, bpf, perf_event_open fail with EPERM', async () => {
    const probeOut = async (args: string[], ...cmd: string[]): Promise<string> => (await f.ferry(['run', '--rm', ...args, 'probe', '/probe', ...cmd])).stdout.trim();
    for (const cmd of [['keyring-id'], ['add-key'], ['unshare-user'], ['clone-user'], ['bpf'], ['perf']]) {
      expect(await probeOut([], ...cmd), cmd.join(' ')).toBe('EPERM');
    }
    // What today's escape used: a new user namespace gives full capabilities in it.
    expect(await probeOut(['--security-opt', 'seccomp=unconfined'], 'unshare-user')).toBe('ok');
    expect(await probeOut(['--security-opt', 'seccomp=unconfined'], 'add-key')).toBe('ok');
    // bpf with the capability and no filter gets as far as checking its argument.
    expect(await probeOut(['--security-opt', 'seccomp=unconfined', '--cap-add', 'SYS_ADMIN'], 'bpf')).toBe('EINVAL');
  });

  it('a docker-format seccomp profile file replaces the default; a bad one is refused at run', async () => {
    const profile = join(f.work, 'profile.json');
    await writeFile(profile, JSON.stringify({
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['mkdirat', 'mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
    }));
    const r = await f.ferry(['run', '--rm', '--security-opt', `seccomp=${profile}`, 'base', 'sh', '-c', 'mkdir /tmp/x || echo refused']);
    expect(r.stdout).toContain('refused');
    await writeFile(profile, '{"defaultAction": "SCMP_ACT_NOPE"}');
    const bad = await f.ferry(['run', '--rm', '--security-opt', `seccomp=${profile}`, 'base', 'true']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(profile);
  });

  it('an image that ran before still runs under the filter (shell, pipes, fork, exec, signals)', async () => {
    expect(await f.ok(['run', '--rm', 'base', 'sh', '-c', 'echo a | cat; (sleep 0.1 &) ; kill -0 $$ && ls / >/dev/null && echo done'])).toBe('a\ndone\n');
  });
});

describe('capabilities', () => {
  const capEff = async (...flags: string[]): Promise<bigint> => {
    const out = await f.ok(['run', '--rm', ...flags, 'base', 'sh', '-c', 'grep CapEff /proc/self/status']);
    return BigInt(`0x${out.trim().split(/\s+/)[1]}`);
  };

  it('root gets docker\'s default set; --cap-drop/--cap-add change it; --privileged gets all', async () => {
    expect(await capEff()).toBe(0xa80425fbn);
    expect(await capEff('--cap-drop', 'ALL')).toBe(0n);
    expect(await capEff('--cap-drop', 'ALL', '--cap-add', 'net_bind_service')).toBe(1n << 10n);
    expect(await capEff('--cap-drop', 'MKNOD', '--cap-add', 'CAP_NET_ADMIN')).toBe((0xa80425fbn & ~(1n << 27n)) | (1n << 12n));
    const all = await capEff('--privileged');
    // Every one ferry itself holds (a sandbox may lack some).
    const bounding = /CapBnd:\s*([0-9a-f]+)/.exec(await readFile('/proc/self/status', 'utf8'))![1]!;
    expect(all).toBe(BigInt(`0x${bounding}`));
    const bad = await f.ferry(['run', '--rm', '--cap-add', 'FLY', 'base', 'true']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--cap-add FLY: unknown capability/);
  });

  it('--privileged sees the host\'s devices and unmasked /proc', async () => {
    const out = await f.ok(['run', '--rm', '--privileged', 'base', 'sh', '-c', 'ls /dev | grep -c loop; wc -c < /proc/interrupts']);
    const [loops, interrupts] = out.trim().split('\n').map(Number);
    expect(loops).toBeGreaterThan(0);
    expect(interrupts).toBeGreaterThan(0);
  });
});

describe('masked paths', () => {
  it('moby GHSA-6fw5-f8r9-fgfm: /proc/interrupts and the CPUs\' thermal_throttle are masked', async () => {
    const throttles = (await readdir('/sys/devices/system/cpu')).filter((n) => /^cpu\d+$/.test(n) && existsSync(`/sys/devices/system/cpu/${n}/thermal_throttle`));
    const out = await f.ok(['run', '--rm', 'base', 'sh', '-c', 'wc -c < /proc/interrupts; ls /sys/devices/system/cpu/cpu*/thermal_throttle 2>/dev/null | grep -vc ":$"; true']);
    const [interrupts, throttleEntries] = out.trim().split('\n').map(Number);
    expect(interrupts).toBe(0);
    if (throttles.length > 0) expect(throttleEntries).toBe(0);
  });
});

describe('volumes', () => {
  it('-v /host/file:/path binds a single file, onto an existing file or a new one', async () => {
    const file = join(f.work, 'single-file');
    await writeFile(file, 'from the host\n');
    expect(await f.ok(['run', '--rm', '-v', `${file}:/etc/hostname`, 'base', 'cat', '/etc/hostname'])).toBe('from the host\n');
    expect(await f.ok(['run', '--rm', '-v', `${file}:/srv/new/file.txt:ro`, 'base', 'sh', '-c', 'cat /srv/new/file.txt; echo x > /srv/new/file.txt || echo ro'])).toMatch(/from the host\n.*ro\n$/s);
    expect(await readFile(file, 'utf8')).toBe('from the host\n');
  });
});
