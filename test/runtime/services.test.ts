import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep, setupRuntime, waitFor, type RuntimeFixture } from './fixture.js';

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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
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
