import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { cgroupMounts } from '../../src/runtime/cgroups.js';
import { freePort } from '../helpers/net.js';
import { addImage, sleep, setupRuntime, waitFor, type RuntimeFixture } from './fixture.js';

/**
 * Services that last (issue 13): restart policies applied by each container's supervisor with
 * docker's back-off, stop that keeps it down, the boot entry point after a simulated host crash,
 * generated systemd units, health checks, --mount.
 */
let f: RuntimeFixture;
const run = promisify(execFile);

interface Inspect {
  State: {
    Status: string;
    Running: boolean;
    Restarting: boolean;
    ExitCode: number;
    StartedAt: string;
    FinishedAt: string;
    OOMKilled: boolean;
    RestartCount: number;
    Pid: number;
    Health?: { Status: string; FailingStreak: number; Log: Array<{ Start: string; End: string; ExitCode: number; Output: string }> };
  };
  RestartCount: number;
  HostConfig: { RestartPolicy: { Name: string; MaximumRetryCount: number } };
  Config: { Healthcheck?: { Test: string[] } };
  Mounts: Array<{ Type: string; Name?: string; Source: string; Destination: string; RW: boolean }>;
}

async function inspect(name: string): Promise<Inspect> {
  return (JSON.parse(await f.ok(['inspect', name])) as Inspect[])[0]!;
}

async function psLine(name: string): Promise<string> {
  return (await f.ok(['ps', '-a'])).split('\n').find((l) => l.endsWith(` ${name}`)) ?? '';
}

/** Every process whose /proc/PID/exe or command line shows it is one of ferry's (supervisor, launcher) or in the container. */
async function pidsOf(root: string, names: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const name of names) {
    const state = JSON.parse(await readFile(join(root, 'containers', await idOf(name), 'state.json'), 'utf8')) as { monitorPid: number; pid: number; supervisorPid?: number };
    out.push(state.monitorPid, state.pid, ...(state.supervisorPid !== undefined ? [state.supervisorPid] : []));
  }
  return out;
}

async function idOf(name: string): Promise<string> {
  return (await inspect(name) as unknown as { Id: string }).Id;
}

async function get(port: number): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolvePromise(body));
    });
    req.on('error', reject);
    req.end();
  });
}

/** What confines the command a container's init (`pid`) started, as the host sees it (cgroup paths name the container, the same across runs). */
async function confinementOf(pid: number): Promise<string> {
  const child = Number((await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(' ')[0]);
  const status = (await readFile(`/proc/${child}/status`, 'utf8')).split('\n').filter((l) => /^(Uid|Gid|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):/.test(l));
  const cgroup = (await readFile(`/proc/${child}/cgroup`, 'utf8')).split('\n').sort();
  return [...status, ...cgroup].join('\n');
}

/** Live `ferry supervise ID` processes. */
async function supervisorsOf(id: string): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') continue; // gone meanwhile
      throw err;
    }
    if (cmdline.split('\0').join(' ').includes(`supervise ${id}`)) out.push(Number(entry));
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

beforeAll(async () => {
  f = await setupRuntime('rt-services', ['base']);
});
afterAll(async () => {
  await f.cleanup();
});

describe('restart policies', () => {
  it('on-failure:3 of a command that exits 1 runs 4 times and stays exited with RestartCount 3', async () => {
    await f.ok(['run', '-d', '--name', 'fails', '--restart', 'on-failure:3', 'base', 'sh', '-c', 'echo run; exit 1']);
    await waitFor(async () => {
      const s = await inspect('fails');
      return s.State.Status === 'exited' && s.RestartCount === 3;
    }, 15_000, 'the fourth exit');
    // The supervisor is gone: nothing restarts it any more.
    await sleep(1500);
    const s = await inspect('fails');
    expect(s.State).toMatchObject({ Status: 'exited', Running: false, Restarting: false, ExitCode: 1, RestartCount: 3 });
    expect(s.RestartCount).toBe(3);
    expect(s.HostConfig.RestartPolicy).toEqual({ Name: 'on-failure', MaximumRetryCount: 3 });
    expect(await f.ok(['logs', 'fails'])).toBe('run\nrun\nrun\nrun\n');
    expect(await psLine('fails')).toMatch(/Exited \(1\) .* ago/);
    // A clean exit is not a failure: on-failure leaves it down at once.
    await f.ok(['run', '-d', '--name', 'clean', '--restart', 'on-failure', 'base', 'true']);
    await waitFor(async () => (await inspect('clean')).State.Status === 'exited', 5000, 'exit');
    await sleep(500);
    expect((await inspect('clean')).State).toMatchObject({ Status: 'exited', ExitCode: 0, RestartCount: 0 });
    await f.ok(['rm', 'fails', 'clean']);
  });

  it('always: kill -9 of the main process from the host brings it back within 2 s; stop keeps it down; the count shows in ps and inspect', async () => {
    await f.ok(['run', '-d', '--name', 'svc', '--restart', 'always', 'base', 'sh', '-c', 'echo up; exec sleep 1000']);
    const first = await inspect('svc');
    expect(first.State.Running).toBe(true);
    expect(first.HostConfig.RestartPolicy).toEqual({ Name: 'always', MaximumRetryCount: 0 });
    process.kill(first.State.Pid, 'SIGKILL');
    const killed = Date.now();
    await waitFor(async () => {
      const s = await inspect('svc');
      return s.State.Running && !s.State.Restarting && s.State.Pid !== first.State.Pid;
    }, 2000, 'the restart');
    const back = Date.now() - killed;
    expect(back).toBeLessThan(2000);
    const again = await inspect('svc');
    expect(again.RestartCount).toBe(1);
    expect(again.State.RestartCount).toBe(1);
    expect((JSON.parse(await f.ok(['ps', '--json'])) as Array<{ name: string; restartCount: number }>).find((c) => c.name === 'svc')?.restartCount).toBe(1);
    // The writable layer is kept across a restart (as ferry start keeps it).
    await f.ok(['exec', 'svc', 'sh', '-c', 'echo kept > /marker']);
    process.kill(again.State.Pid, 'SIGKILL');
    await waitFor(async () => (await inspect('svc')).RestartCount === 2 && (await inspect('svc')).State.Running, 3000, 'the second restart');
    expect(await f.ok(['exec', 'svc', 'cat', '/marker'])).toBe('kept\n');

    await f.ok(['stop', '-t', '1', 'svc']);
    await sleep(1500);
    const stopped = await inspect('svc');
    expect(stopped.State).toMatchObject({ Status: 'exited', Running: false, RestartCount: 2 });
    expect(await psLine('svc')).toMatch(/Exited \(\d+\)/);
    // start by hand: supervised again, the count starts over.
    await f.ok(['start', 'svc']);
    expect((await inspect('svc')).State).toMatchObject({ Running: true, RestartCount: 0 });
    await f.ok(['rm', '-f', 'svc']);
  });

  it('a restart by the policy keeps the limits, the published port, the volume and the confinement (user, capabilities, seccomp, cgroups)', async () => {
    const port = await freePort();
    const script = 'echo run >> /data/runs; mkdir -p /www; echo hello > /www/index.html; exec httpd -f -p 80 -h /www';
    await f.ok(['run', '-d', '--name', 'keep', '--restart', 'always', '--memory', '96m', '--pids-limit', '50', '-p', `127.0.0.1:${port}:80`, '-v', 'keepvol:/data', 'base', 'sh', '-c', script]);
    const id = await idOf('keep');
    await waitFor(async () => (await get(port).catch(() => '')) === 'hello\n', 10_000, 'httpd');
    const pid = (await inspect('keep')).State.Pid;
    const before = await confinementOf(pid);
    expect(before).toMatch(/Seccomp:\s+2/);
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => {
      const s = await inspect('keep');
      return s.RestartCount === 1 && s.State.Running && s.State.Pid !== pid;
    }, 3000, 'the restart');
    await waitFor(async () => (await get(port).catch(() => '')) === 'hello\n', 10_000, 'httpd after the restart');
    const mounts = cgroupMounts();
    const v1 = mounts.v1.has('memory');
    const node = (controller: string): string => (v1 ? join(mounts.v1.get(controller)!, 'ferry', id) : join(mounts.v2!, 'ferry', id));
    expect(Number((await readFile(join(node('memory'), v1 ? 'memory.limit_in_bytes' : 'memory.max'), 'utf8')).trim())).toBe(96 * 1024 * 1024);
    expect((await readFile(join(node('pids'), 'pids.max'), 'utf8')).trim()).toBe('50');
    expect(await f.ok(['exec', 'keep', 'cat', '/data/runs'])).toBe('run\nrun\n');
    // Confined as the first start was: user, capabilities, seccomp, no-new-privileges, cgroups (devices included).
    expect(await confinementOf((await inspect('keep')).State.Pid)).toBe(before);
    await f.ok(['rm', '-f', '-v', 'keep']);
    await f.ok(['volume', 'rm', 'keepvol']);
  });

  it('ps shows "Restarting (N) ... ago" while it backs off', async () => {
    await f.ok(['run', '-d', '--name', 'flap', '--restart', 'always', 'base', 'sh', '-c', 'exit 4']);
    let seen = '';
    await waitFor(async () => {
      seen = await psLine('flap');
      return /Restarting \(4\) .* ago/.test(seen);
    }, 15_000, `ps to show Restarting (last: ${seen})`);
    const s = await inspect('flap');
    expect(s.State.Restarting || s.State.Running).toBe(true);
    expect(s.RestartCount).toBeGreaterThan(0);
    // stop during the back-off: it stays down.
    await f.ok(['stop', 'flap']);
    const count = (await inspect('flap')).RestartCount;
    await sleep(1500);
    expect((await inspect('flap')).State).toMatchObject({ Status: 'exited', ExitCode: 4, RestartCount: count });
    await f.ok(['rm', 'flap']);
  });

  it('usage errors come before any work: a bad policy, --restart with --rm or without -d', async () => {
    for (const args of [['--restart', 'sometimes'], ['--restart', 'always:3'], ['-d', '--rm', '--restart', 'always'], ['--restart', 'always']]) {
      const r = await f.ferry(['run', ...args, 'base', 'true']);
      expect(r.code, args.join(' ')).toBe(2);
    }
    expect(await f.ok(['ps', '-aq'])).toBe('');
  });

  it('a restart policy does not hide a command that cannot start (127, nothing left running)', async () => {
    const r = await f.ferry(['run', '-d', '--name', 'nope', '--restart', 'always', 'base', 'no-such-command']);
    expect(r.code).toBe(127);
    await sleep(500);
    expect((await inspect('nope')).State.Running).toBe(false);
    await f.ok(['rm', 'nope']);
  });
});

describe('back after a reboot', () => {
  it('after a simulated host crash (SIGKILL to every monitor, supervisor and container), start --all-restartable brings back always and unless-stopped, not one stopped by hand', async () => {
    const sh = ['base', 'sh', '-c', 'exec sleep 1000'];
    await f.ok(['run', '-d', '--name', 'b-always', '--restart', 'always', ...sh]);
    await f.ok(['run', '-d', '--name', 'b-unless', '--restart', 'unless-stopped', ...sh]);
    await f.ok(['run', '-d', '--name', 'b-unless-stopped', '--restart', 'unless-stopped', ...sh]);
    await f.ok(['run', '-d', '--name', 'b-none', ...sh]);
    await f.ok(['run', '-d', '--name', 'b-always-stopped', '--restart', 'always', ...sh]);
    await f.ok(['stop', '-t', '1', 'b-unless-stopped', 'b-always-stopped']);
    const running = ['b-always', 'b-unless', 'b-none'];
    const pids = await pidsOf(f.root, running);
    // The crash: everything of ferry's dies at once, nothing gets to record an exit.
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await waitFor(async () => pids.every((p) => !alive(p)), 5000, 'the processes to die');
    await sleep(300);
    for (const name of running) expect((await inspect(name)).State.Running, name).toBe(false);

    // The boot entry point and a unit's ferry start racing: still one supervisor per container.
    const [started] = await Promise.all([f.ok(['start', '--all-restartable']), f.ok(['start', 'b-always']), f.ok(['start', 'b-always'])]);
    expect(await supervisorsOf(await idOf('b-always'))).toHaveLength(1);
    // docker's rule when its daemon comes up: always even when stopped by hand, unless-stopped only when not.
    // b-always is named unless one of the racing `ferry start b-always` got there first (then the boot run left it alone).
    expect(started.split('\n').filter((l) => l !== '' && l !== 'b-always').sort()).toEqual(['b-always-stopped', 'b-unless']);
    for (const name of ['b-always', 'b-unless', 'b-always-stopped']) expect((await inspect(name)).State.Running, name).toBe(true);
    for (const name of ['b-unless-stopped', 'b-none']) expect((await inspect(name)).State.Running, name).toBe(false);
    // Supervised again: a kill -9 is followed by a restart.
    const pid = (await inspect('b-unless')).State.Pid;
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => (await inspect('b-unless')).State.Running && (await inspect('b-unless')).State.Pid !== pid, 3000, 'the restart');
    // Running ones are left alone by a second boot run.
    expect(await f.ok(['start', '--all-restartable'])).toBe('');
    await f.ok(['rm', '-f', 'b-always', 'b-unless', 'b-unless-stopped', 'b-none', 'b-always-stopped']);
  });

  it('a shutdown (SIGTERM to the supervisor) stops the container with its stop signal but not "by hand": unless-stopped comes back at the next boot', async () => {
    await f.ok(['run', '-d', '--name', 'down', '--restart', 'unless-stopped', 'base', 'sh', '-c', 'trap "echo got TERM; exit 0" TERM; while true; do sleep 0.1; done']);
    const id = await idOf('down');
    const [supervisor] = await supervisorsOf(id);
    process.kill(supervisor!, 'SIGTERM');
    await waitFor(async () => !alive(supervisor!) && !(await inspect('down')).State.Running, 10_000, 'the shutdown');
    expect((await inspect('down')).State).toMatchObject({ Status: 'exited', ExitCode: 0 });
    expect(await f.ok(['logs', 'down'])).toBe('got TERM\n');
    expect(existsSync(join(f.root, 'containers', id, 'stopped'))).toBe(false);
    expect(await f.ok(['start', '--all-restartable'])).toBe('down\n');
    expect((await inspect('down')).State.Running).toBe(true);
    await f.ok(['rm', '-f', 'down']);
  });

  it('generate systemd prints a forking unit (PIDFile, KillMode=mixed, Restart=on-failure, ExecStop with the timeout) and the boot unit; systemd-analyze verify accepts both', async () => {
    await f.ok(['run', '-d', '--name', 'unit', '--restart', 'unless-stopped', 'base', 'sleep', '1000']);
    const id = await idOf('unit');
    const unit = await f.ok(['generate', 'systemd', '-t', '15', 'unit']);
    expect(unit).toMatch(/^Type=forking$/m);
    expect(unit).toMatch(/^KillMode=mixed$/m);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toContain(`PIDFile=${join(f.root, 'containers', id, 'main.pid')}`);
    expect(unit).toMatch(new RegExp(`^ExecStart=\\S+ \\S+ --root ${f.root} start ${id}$`, 'm'));
    expect(unit).toMatch(new RegExp(`^ExecStop=\\S+ \\S+ --root ${f.root} stop -t 15 ${id}$`, 'm'));
    expect(unit).toMatch(/^TimeoutStopSec=35$/m);
    // The PIDFile names the process systemd watches: the supervisor ferry start forked.
    const mainPid = Number((await readFile(join(f.root, 'containers', id, 'main.pid'), 'utf8')).trim());
    const state = JSON.parse(await readFile(join(f.root, 'containers', id, 'state.json'), 'utf8')) as { supervisorPid: number };
    expect(mainPid).toBe(state.supervisorPid);
    const boot = await f.ok(['generate', 'systemd', '--boot']);
    expect(boot).toMatch(/^Type=oneshot$/m);
    expect(boot).toMatch(new RegExp(`^ExecStart=\\S+ \\S+ --root ${f.root} start --all-restartable$`, 'm'));
    expect((await f.ferry(['generate', 'systemd'])).code).toBe(2);
    // No systemd as PID 1 here: --install says so instead of writing half a setup.
    if (!existsSync('/run/systemd/system')) {
      const r = await f.ferry(['generate', 'systemd', '--install', 'unit']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/systemd is not running here/);
    }
    let analyze: string;
    analyze = (await run('sh', ['-c', 'command -v systemd-analyze || true'])).stdout.trim();
    if (analyze === '') {
      console.warn('systemd-analyze is not installed: the units were not verified');
    } else {
      const dir = join(f.work, 'units');
      await run('mkdir', ['-p', dir]);
      for (const [name, text] of [['ferry-unit.service', unit], ['ferry-containers.service', boot]] as const) {
        await writeFile(join(dir, name), text);
        const r = await run(analyze, ['verify', join(dir, name)]).then((o) => ({ code: 0, stderr: o.stderr }), (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }));
        // verify exits 0 even for lines it ignores; what it says about the file is the verdict.
        expect(r, name).toEqual({ code: 0, stderr: expect.not.stringContaining(name) as unknown as string });
      }
    }
    await f.ok(['rm', '-f', 'unit']);
  });
});

describe('health checks', () => {
  it('a check that starts failing turns ps to (unhealthy) after the retries; inspect has State.Health with the last 5 results', async () => {
    await f.ok(['run', '-d', '--name', 'hc', '--health-cmd', 'test -f /tmp/ok && echo fine', '--health-interval', '200ms', '--health-retries', '2', 'base', 'sh', '-c', 'touch /tmp/ok; exec sleep 1000']);
    await waitFor(async () => /\(healthy\)/.test(await psLine('hc')), 5000, 'healthy');
    const healthy = (await inspect('hc')).State.Health!;
    expect(healthy).toMatchObject({ Status: 'healthy', FailingStreak: 0 });
    expect(healthy.Log.at(-1)).toMatchObject({ ExitCode: 0, Output: 'fine\n' });
    await f.ok(['exec', 'hc', 'rm', '/tmp/ok']);
    await waitFor(async () => /Up .* \(unhealthy\)/.test(await psLine('hc')), 5000, 'unhealthy');
    await sleep(1000);
    const state = (await inspect('hc')).State;
    // What `ferry inspect C | jq .State` gives, as docker's.
    expect(Object.keys(state)).toEqual(expect.arrayContaining(['Status', 'Running', 'ExitCode', 'StartedAt', 'FinishedAt', 'OOMKilled', 'RestartCount', 'Health']));
    const sick = state.Health!;
    expect(sick.Status).toBe('unhealthy');
    expect(sick.FailingStreak).toBeGreaterThanOrEqual(2);
    expect(sick.Log.length).toBe(5);
    for (const r of sick.Log) expect(Date.parse(r.End)).toBeGreaterThanOrEqual(Date.parse(r.Start));
    expect(sick.Log.at(-1)!.ExitCode).toBe(1);
    // Without --health-on-failure it is only reported: still the same run.
    expect((await inspect('hc')).RestartCount).toBe(0);
    await f.ok(['rm', '-f', 'hc']);
  });

  it('--health-on-failure restart: an unhealthy container is restarted (its writable layer kept), and starts healthy again', async () => {
    await f.ok(['run', '-d', '--name', 'hr', '--health-cmd', 'test -f /tmp/ok', '--health-interval', '200ms', '--health-retries', '2', '--health-on-failure', 'restart', 'base', 'sh', '-c', 'touch /tmp/ok; echo start >> /runs; exec sleep 1000']);
    await waitFor(async () => /\(healthy\)/.test(await psLine('hr')), 5000, 'healthy');
    const pid = (await inspect('hr')).State.Pid;
    await f.ok(['exec', 'hr', 'rm', '/tmp/ok']);
    await waitFor(async () => {
      const s = await inspect('hr');
      return s.RestartCount === 1 && s.State.Running && s.State.Pid !== pid;
    }, 20_000, 'the restart');
    await waitFor(async () => /\(healthy\)/.test(await psLine('hr')), 5000, 'healthy again');
    expect(await f.ok(['exec', 'hr', 'cat', '/runs'])).toBe('start\nstart\n');
    await f.ok(['rm', '-f', 'hr']);
  });

  it('--health-on-failure kill with --restart always: the unhealthy container is killed and its policy starts it again', async () => {
    await f.ok(['run', '-d', '--name', 'hk', '--restart', 'always', '--health-cmd', 'test -f /tmp/ok', '--health-interval', '200ms', '--health-retries', '1', '--health-on-failure', 'kill', 'base', 'sh', '-c', 'touch /tmp/ok; exec sleep 1000']);
    await waitFor(async () => /\(healthy\)/.test(await psLine('hk')), 5000, 'healthy');
    await f.ok(['exec', 'hk', 'rm', '/tmp/ok']);
    await waitFor(async () => (await inspect('hk')).RestartCount === 1, 10_000, 'the kill and restart');
    await waitFor(async () => /\(healthy\)/.test(await psLine('hk')), 5000, 'healthy again');
    await f.ok(['rm', '-f', 'hk']);
  });

  it("the image's Healthcheck applies (durations in ns), --no-healthcheck drops it, a probe past --health-timeout is killed and logged as -1, and a probe is confined as exec is", async () => {
    await addImage(f, 'checked', async () => undefined, { Healthcheck: { Test: ['CMD-SHELL', 'echo image-check'], Interval: 200e6, Retries: 1 } });
    await f.ok(['run', '-d', '--name', 'img', 'checked', 'sleep', '1000']);
    await waitFor(async () => /\(healthy\)/.test(await psLine('img')), 5000, 'healthy');
    const s = await inspect('img');
    expect(s.Config.Healthcheck).toEqual({ Test: ['CMD-SHELL', 'echo image-check'], Interval: 200e6, Retries: 1 });
    expect(s.State.Health!.Log.at(-1)!.Output).toBe('image-check\n');

    await f.ok(['run', '-d', '--name', 'none', '--no-healthcheck', 'checked', 'sleep', '1000']);
    const n = await inspect('none');
    expect(n.Config.Healthcheck).toBeUndefined();
    expect(n.State.Health).toBeUndefined();
    expect(await psLine('none')).not.toMatch(/health/);
    expect((await f.ferry(['run', '-d', '--no-healthcheck', '--health-cmd', 'true', 'checked'])).code).toBe(2);
    expect((await f.ferry(['run', '-d', '--health-interval', '5x', 'base'])).code).toBe(2);

    await f.ok(['run', '-d', '--name', 'slow', '--health-cmd', 'sleep 5', '--health-timeout', '300ms', '--health-interval', '200ms', '--health-retries', '1', 'base', 'sleep', '1000']);
    await waitFor(async () => /\(unhealthy\)/.test(await psLine('slow')), 5000, 'unhealthy');
    expect((await inspect('slow')).State.Health!.Log[0]).toMatchObject({ ExitCode: -1, Output: 'Health check exceeded timeout (0.3s)' });

    // Failures inside the start period do not count: it stays "starting".
    await f.ok(['run', '-d', '--name', 'early', '--health-cmd', 'false', '--health-start-period', '60s', '--health-interval', '200ms', '--health-retries', '1', 'base', 'sleep', '1000']);
    await waitFor(async () => ((await inspect('early')).State.Health?.Log.length ?? 0) >= 2, 5000, 'two probes');
    expect(await psLine('early')).toMatch(/Up .* \(health: starting\)/);
    expect((await inspect('early')).State.Health).toMatchObject({ Status: 'starting', FailingStreak: 0 });

    // A probe is confined exactly as ferry exec is: same user, capabilities, seccomp, no-new-privileges, cgroup.
    const status = 'grep -E "^(Uid|Gid|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):" /proc/self/status; cat /proc/self/cgroup | sort';
    await f.ok(['run', '-d', '--name', 'conf', '-u', 'app', '--cap-drop', 'NET_RAW', '--health-cmd', status, '--health-interval', '200ms', 'base', 'sleep', '1000']);
    await waitFor(async () => /\(healthy\)/.test(await psLine('conf')), 5000, 'healthy');
    const probed = (await inspect('conf')).State.Health!.Log.at(-1)!.Output;
    expect(probed).toMatch(/Seccomp:\s+2/);
    expect(probed).toBe(await f.ok(['exec', 'conf', 'sh', '-c', status]));
    await f.ok(['rm', '-f', 'img', 'none', 'slow', 'early', 'conf']);
  });
});
