import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../src/runtime/doctor.js';
import { checkCgroups, checkKernel } from '../../src/runtime/doctor.js';
import { FERRY_BIN, runFerry } from '../helpers/ferry.js';
import { buildTestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/** `ferry doctor`: real checks on this host (CI is root), and on a store where overlay cannot work. */

const exec = promisify(execFile);

let work: string;

beforeAll(async () => {
  work = await makeTempDir('doctor');
});

afterAll(async () => {
  await removeDir(work);
});

function checkNamed(report: DoctorReport, name: string): DoctorReport['checks'][number] {
  const found = report.checks.find((c) => c.name === name);
  if (found === undefined) throw new Error(`no ${name} check in ${JSON.stringify(report)}`);
  return found;
}

describe('ferry doctor', () => {
  it('exits 0 on a good host, having test-mounted an overlay on the store filesystem and fsck-ed the store', async () => {
    const root = join(work, 'good');
    const layout = await buildTestLayout(join(work, 'layout'));
    const imported = await runFerry(['--root', root, 'import', `oci:${layout.dir}:base`]);
    expect(imported.code, imported.stderr).toBe(0);
    const r = await runFerry(['--root', root, 'doctor', '--json']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as DoctorReport;
    expect(report.ok).toBe(true);
    expect(report.checks.map((c) => c.name)).toEqual(['root', 'kernel', 'namespaces', 'cgroups', 'network', 'space', 'noexec', 'native', 'overlay', 'store']);
    for (const name of ['root', 'kernel', 'overlay', 'store', 'native', 'namespaces']) expect(checkNamed(report, name).status, name).toBe('ok');
    expect(checkNamed(report, 'overlay').detail).toMatch(/overlay mounted on .* pivot_root and exec in new mount, pid, uts, ipc and net namespaces/);
    expect(checkNamed(report, 'store').detail).toMatch(/1 images, 1 layers/);
    // The probe leaves nothing behind in the store.
    const fsck = await runFerry(['--root', root, 'fsck']);
    expect(fsck.code, fsck.stdout).toBe(0);
    const human = await runFerry(['--root', root, 'doctor']);
    expect(human.stdout).toMatch(/^ok +overlay /m);
    expect(human.stdout).toMatch(/ferry can run containers on this host\n$/);
  });

  it('says overlay is what is missing, with the fix, and exits 1 when the store is on a filesystem overlay cannot use (an overlay)', async () => {
    const base = join(work, 'ovl');
    for (const d of ['lower', 'upper', 'work', 'merged']) await mkdir(join(base, d), { recursive: true });
    // In a private mount namespace: the overlay under the store vanishes with the shell.
    const script = `set -e; mount -t overlay overlay -o lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work ${base}/merged; ` +
      `${process.execPath} ${FERRY_BIN} --root ${base}/merged/store doctor --json > ${base}/report.json || echo $? > ${base}/rc; ` +
      `${process.execPath} ${FERRY_BIN} --root ${base}/merged/store doctor > ${base}/report.txt || true`;
    await exec('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script]);
    expect((await readFile(join(base, 'rc'), 'utf8')).trim()).toBe('1');
    const report = JSON.parse(await readFile(join(base, 'report.json'), 'utf8')) as DoctorReport;
    expect(report.ok).toBe(false);
    const overlay = checkNamed(report, 'overlay');
    expect(overlay.status).toBe('fail');
    expect(overlay.detail).toMatch(/test mount of an overlay on .*merged\/\.ferry-doctor-\w+ \(overlay\) failed: .*Invalid argument/);
    expect(overlay.fix).toMatch(/put the store on a local ext4 or xfs filesystem/);
    // Everything else is fine: overlay is the one thing named.
    expect(report.checks.filter((c) => c.status === 'fail').map((c) => c.name)).toEqual(['overlay']);
    const text = await readFile(join(base, 'report.txt'), 'utf8');
    expect(text).toMatch(/^FAIL +overlay +test mount/m);
    expect(text).toMatch(/fix: put the store on a local ext4 or xfs filesystem/);
    expect(text).toMatch(/ferry cannot run containers on this host until the FAIL lines are fixed\n$/);
  });

  it('fails on root when run by another user, and does not test the overlay then', async () => {
    const home = join(work, 'nobody');
    await mkdir(home, { recursive: true });
    await chmod(work, 0o755);
    await exec('chown', ['65534:65534', home]);
    const r = await exec('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, FERRY_BIN, 'doctor', '--json'], {
      env: { ...process.env, HOME: home, XDG_DATA_HOME: home },
    }).then(
      (ok) => ({ code: 0, stdout: ok.stdout }),
      (err: { code: number; stdout: string }) => ({ code: err.code, stdout: err.stdout }),
    );
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as DoctorReport;
    expect(checkNamed(report, 'root')).toMatchObject({ status: 'fail', fix: expect.stringMatching(/run ferry as root/) as unknown });
    expect(checkNamed(report, 'overlay')).toMatchObject({ status: 'fail', detail: 'not tested: needs root' });
  });

  it('reads kernel versions and cgroup mounts', async () => {
    expect(checkKernel('4.9.0-19-amd64')).toMatchObject({ status: 'fail', fix: expect.stringMatching(/upgrade the kernel/) as unknown });
    expect(checkKernel('4.18.0-553.el8_10.x86_64').status).toBe('ok');
    expect(checkKernel('6.1.0-18-amd64').status).toBe('ok');
    const v2 = '30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n';
    expect(await checkCgroups(v2)).toMatchObject({ status: 'ok', detail: 'cgroup v2 at /sys/fs/cgroup' });
    const v1 = ['memory', 'cpu', 'cpuset', 'pids', 'devices', 'freezer'].map((c, i) => `${40 + i} 31 0:${40 + i} / /sys/fs/cgroup/${c} rw,relatime - cgroup cgroup rw,${c}\n`);
    expect(await checkCgroups(v1.join(''))).toMatchObject({ status: 'ok', detail: 'cgroup v1 (6 hierarchies)' });
    const noPids = await checkCgroups(v1.filter((l) => !l.includes('pids')).join(''));
    expect(noPids).toMatchObject({ status: 'warn', detail: expect.stringMatching(/without pids \(--pids-limit\)/) as unknown, fix: expect.stringMatching(/mount -t cgroup -o pids/) as unknown });
    const none = '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n';
    expect(await checkCgroups(none)).toMatchObject({ status: 'warn', fix: expect.stringMatching(/mount -t cgroup2/) as unknown });
  });
});
