import { constants as fsConstants } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { messageOf } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-file.js';
import type { Store } from '../store/index.js';
import { execLaunchSpec, launchRecord, recordStarted } from './containers.js';
import {
  MAX_OUTPUT_BYTES,
  applyProbeResult,
  healthTiming,
  initialHealth,
  probeArgv,
  type HealthResult,
  type HealthState,
  type HealthTiming,
} from './healthcheck.js';
import { launch, LaunchError, type Launched } from './launcher.js';
import { NO_RESTART, nextBackoff, shouldRestart } from './restart-policy.js';
import { killArgument, parseSignal } from './signals.js';
import { pathExists } from '../io/atomic-file.js';
import { containerPaths, loadContainer, processStartTime, shortId, writeRunState, type ContainerRecord, type ContainerRunState } from './state.js';
import type { SupervisorStart } from './supervise.js';
import { isoTime } from '../io/iso-time.js';

/**
 * A container's supervisor (`ferry supervise ID`, started by supervise.ts): ferry has no daemon,
 * so each container with a restart policy or a health check gets this one detached process.
 *
 * Why a Node process and not a loop in the C monitor: every start goes through launchRecord,
 * the same path as `ferry start` (rootfs plan, cgroup plan and limits, ports, volumes, seccomp,
 * capabilities, masked paths), so a restart cannot confine less than the first start; health
 * probes go through the same exec path as `ferry exec`. The C monitor stays one run's monitor:
 * if the supervisor dies, the container runs on unsupervised (its exit still recorded).
 *
 * Stop protocol: `ferry stop`/`kill` first write the `stopped` mark, then signal the container;
 * the supervisor reads the mark after each exit and before each restart. SIGTERM to the
 * supervisor (host shutdown, or stop while it waits out a back-off) stops the container with
 * its stop signal and ends supervision without the mark, so `unless-stopped` comes back at boot.
 */

const STOP_TIMEOUT_MS = 10_000;

function sendSignal(pid: number, signal: NodeJS.Signals | number): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** A sleep that `wake()` cuts short. */
function wakeableSleep(): { sleep(ms: number): Promise<void>; wake(): void } {
  let waker: (() => void) | undefined;
  return {
    sleep: (ms) =>
      new Promise<void>((resolvePromise) => {
        const timer = setTimeout(done, ms);
        function done(): void {
          clearTimeout(timer);
          waker = undefined;
          resolvePromise();
        }
        waker = done;
      }),
    wake: () => waker?.(),
  };
}

/** One probe: the health command in the container (as `ferry exec` runs it), its output and exit code, or -1 past the timeout. */
async function probe(store: Store, record: ContainerRecord, target: { pid: number; pidStart: string }, timing: HealthTiming): Promise<HealthResult> {
  const start = new Date();
  const p = record.process;
  const spec = await execLaunchSpec(store, record, target, {
    argv: probeArgv(record.healthcheck!),
    env: p.env,
    cwd: p.cwd,
    user: { uid: p.uid, gid: p.gid, groups: p.groups, home: p.home, name: undefined },
    tty: false,
    interactive: false,
  });
  let output = Buffer.alloc(0);
  const keep = (c: Buffer): void => {
    if (output.length < MAX_OUTPUT_BYTES) output = Buffer.concat([output, c]).subarray(0, MAX_OUTPUT_BYTES);
  };
  let launched: Launched;
  try {
    launched = await launch(spec, { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  } catch (err) {
    // The container ended meanwhile, or the command does not exist: a failed probe, as docker records it.
    return { Start: isoTime(start), End: isoTime(), ExitCode: err instanceof LaunchError ? err.exitCode : 1, Output: messageOf(err) };
  }
  launched.child?.stdout?.on('data', keep);
  launched.child?.stderr?.on('data', keep);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    sendSignal(launched.pid, 'SIGKILL');
  }, timing.timeoutMs);
  const code = await launched.exited;
  clearTimeout(timer);
  const end = isoTime();
  if (timedOut) return { Start: isoTime(start), End: end, ExitCode: -1, Output: `Health check exceeded timeout (${timing.timeoutMs / 1000}s)` };
  return { Start: isoTime(start), End: end, ExitCode: code, Output: output.toString('utf8') };
}

/**
 * Probe every interval while this run lasts; `onUnhealthy` when the status turns unhealthy.
 * The state goes to health.json after each probe (what ps and inspect read).
 */
function startHealthChecks(
  store: Store,
  record: ContainerRecord,
  launched: Launched,
  onUnhealthy: () => void,
): { stop(): Promise<void> } {
  const path = containerPaths(store.root, record.id).health;
  const timing = healthTiming(record.healthcheck!);
  const started = Date.now();
  const target = { pid: launched.pid, pidStart: processStartTime(launched.pid) ?? '' };
  const pause = wakeableSleep();
  let running = true;
  let state: HealthState = initialHealth();
  const loop = (async (): Promise<void> => {
    await writeFileAtomic(path, `${JSON.stringify(state)}\n`, 0o644);
    for (;;) {
      await pause.sleep(timing.intervalMs);
      if (!running) return;
      const result = await probe(store, record, target, timing);
      if (!running) return;
      const before = state.Status;
      state = applyProbeResult(state, result, timing, Date.now() - started < timing.startPeriodMs);
      await writeFileAtomic(path, `${JSON.stringify(state)}\n`, 0o644);
      if (state.Status === 'unhealthy' && before !== 'unhealthy') onUnhealthy();
    }
  })().catch((err: unknown) => {
    // ferry's own failure (no space for health.json, ...): said in the log; the container runs on.
    process.stderr.write(`ferry: health checks of container ${record.name} stopped: ${messageOf(err)}\n`);
  });
  return {
    async stop() {
      running = false;
      pause.wake();
      await loop;
    },
  };
}

/**
 * Run container `id` until it stays down: start it, wait, apply the restart policy with docker's
 * back-off, keep its state (pids, RestartCount, Restarting) in state.json. `report` says once
 * whether the first start worked. Resolves with the last exit code.
 */
export async function superviseContainer(store: Store, id: string, report: (started: SupervisorStart) => void): Promise<number> {
  const info = /^[0-9a-f]{64}$/.test(id) ? await loadContainer(store.root, id) : undefined;
  if (info === undefined) {
    report({ ok: false, message: `supervise container ${shortId(id)}: no such container`, exitCode: 125 });
    return 125;
  }
  const record: ContainerRecord = { ...info.record, detached: true };
  const paths = containerPaths(store.root, id);
  const policy = record.restartPolicy ?? NO_RESTART;
  const stopSignal = killArgument(parseSignal(record.stopSignal));
  const me = { supervisorPid: process.pid, supervisorStart: processStartTime(process.pid) ?? '' };
  const log = await open(paths.log, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_APPEND | fsConstants.O_NOFOLLOW, 0o640);
  const backoffSleep = wakeableSleep();
  let terminating = false;
  let current: Launched | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  /** Stop the current run (StopSignal, SIGKILL after the timeout). */
  const stopCurrent = (): void => {
    const run = current;
    if (run === undefined) return;
    sendSignal(run.pid, stopSignal);
    killTimer ??= setTimeout(() => sendSignal(run.pid, 'SIGKILL'), STOP_TIMEOUT_MS);
  };
  const onTerminate = (): void => {
    terminating = true;
    backoffSleep.wake();
    stopCurrent();
  };
  process.on('SIGTERM', onTerminate);
  process.on('SIGINT', onTerminate);
  let healthRestart = false;
  let healthStop = false;
  const onUnhealthy = (): void => {
    if (record.healthOnFailure === 'kill' && current !== undefined) sendSignal(current.pid, 'SIGKILL');
    else if (record.healthOnFailure === 'restart') {
      healthRestart = true;
      stopCurrent();
    } else if (record.healthOnFailure === 'stop') {
      healthStop = true;
      stopCurrent();
    }
  };

  let restartCount = 0;
  let backoff = 0;
  let code = 0;
  let state: ContainerRunState | undefined;
  try {
    for (let first = true; ; first = false) {
      const startedAt = Date.now();
      let launched: Launched | undefined;
      try {
        launched = await launchRecord(store, record, ['ignore', log.fd, log.fd]);
      } catch (err) {
        if (first) {
          report({ ok: false, message: messageOf(err), exitCode: err instanceof LaunchError ? err.exitCode : 125, ...(err instanceof LaunchError && err.hint !== undefined ? { hint: err.hint } : {}) });
          return err instanceof LaunchError ? err.exitCode : 125;
        }
        // A restart that cannot start (a port taken meanwhile, ...) counts as a failed run.
        code = err instanceof LaunchError ? err.exitCode : 125;
        await log.write(`ferry: restart ${restartCount} of container ${record.name} failed: ${messageOf(err)}\n`);
        await writeFileAtomic(paths.exit, `${code}\n`, 0o644);
      }
      if (launched !== undefined) {
        current = launched;
        await recordStarted(store.root, id, launched, { ...me, restartCount });
        state = (await loadContainer(store.root, id))?.state;
        if (first) report({ ok: true });
        // A SIGTERM that came while it started.
        if (terminating) stopCurrent();
        const health = record.healthcheck !== undefined ? startHealthChecks(store, record, launched, onUnhealthy) : undefined;
        code = await launched.exited;
        current = undefined;
        clearTimeout(killTimer);
        killTimer = undefined;
        await health?.stop();
      }
      if (terminating || healthStop || (await pathExists(paths.stopped))) break;
      if (!healthRestart && !shouldRestart(policy, code, restartCount)) break;
      healthRestart = false;
      backoff = nextBackoff(backoff, Date.now() - startedAt);
      state = { ...(state ?? { monitorPid: 0, monitorStart: '', pid: 0, pidStart: '', startedAt: isoTime(new Date(startedAt)) }), ...me, restartCount, restarting: true, lastExitCode: code, lastFinishedAt: isoTime() };
      await writeRunState(store.root, id, state);
      await backoffSleep.sleep(backoff);
      if (terminating || (await pathExists(paths.stopped))) break;
      restartCount++;
      // Before the launch: the new run's monitor writes its own exit file.
      await rm(paths.exit, { force: true });
      await rm(paths.health, { force: true });
    }
  } finally {
    await log.close();
  }
  if (state?.restarting === true) {
    const { restarting: _r, lastExitCode: _c, lastFinishedAt: _f, ...rest } = state;
    await writeRunState(store.root, id, rest);
  }
  return code;
}
