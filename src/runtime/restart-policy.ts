import { UsageError } from '../errors.js';

/**
 * `--restart no|on-failure[:N]|always|unless-stopped` with docker's rules (moby
 * restartmanager): pure decisions the container's supervisor applies after each exit.
 */
export type RestartPolicyName = 'no' | 'on-failure' | 'always' | 'unless-stopped';

export interface RestartPolicy {
  name: RestartPolicyName;
  /** on-failure:N; 0 = no limit. */
  maximumRetryCount: number;
}

export const NO_RESTART: RestartPolicy = { name: 'no', maximumRetryCount: 0 };

/** docker's restartmanager: the first delay, its doubling cap, and how long a run must last to reset it. */
export const BACKOFF_FIRST_MS = 100;
export const BACKOFF_MAX_MS = 60_000;
export const BACKOFF_RESET_AFTER_MS = 10_000;

export function parseRestartPolicy(text: string): RestartPolicy {
  const [name = '', count, ...rest] = text.split(':');
  if (rest.length > 0) throw new UsageError(`--restart ${text}: expected no, on-failure[:N], always or unless-stopped`);
  if (name === 'no' || name === 'always' || name === 'unless-stopped') {
    if (count !== undefined) throw new UsageError(`--restart ${text}: a maximum retry count is only valid with on-failure`);
    return { name, maximumRetryCount: 0 };
  }
  if (name === 'on-failure') {
    if (count === undefined) return { name, maximumRetryCount: 0 };
    if (!/^\d{1,9}$/.test(count)) throw new UsageError(`--restart ${text}: the maximum retry count must be a whole number`);
    return { name, maximumRetryCount: Number(count) };
  }
  throw new UsageError(`--restart ${text}: expected no, on-failure[:N], always or unless-stopped`);
}

/** The policy as docker spells it (`on-failure:3`). */
export function formatRestartPolicy(p: RestartPolicy): string {
  return p.name === 'on-failure' && p.maximumRetryCount > 0 ? `${p.name}:${p.maximumRetryCount}` : p.name;
}

/** Whether a container that exited with `exitCode`, after `restartCount` restarts, runs again (not stopped by hand). */
export function shouldRestart(p: RestartPolicy, exitCode: number, restartCount: number): boolean {
  if (p.name === 'always' || p.name === 'unless-stopped') return true;
  if (p.name === 'on-failure') return exitCode !== 0 && (p.maximumRetryCount === 0 || restartCount < p.maximumRetryCount);
  return false;
}

/**
 * The wait before the next start: 100 ms, doubled after each quick exit (up to a minute), back
 * to 100 ms once a run lasted 10 s. `previousMs` 0: none yet.
 */
export function nextBackoff(previousMs: number, ranMs: number): number {
  if (previousMs === 0 || ranMs >= BACKOFF_RESET_AFTER_MS) return BACKOFF_FIRST_MS;
  return Math.min(previousMs * 2, BACKOFF_MAX_MS);
}

/**
 * After a reboot (the boot entry point): docker's rule when its daemon starts. `always` comes
 * back even when stopped by hand; `unless-stopped` only when it was not; `on-failure` when it
 * was running when the host went down (no recorded exit) and has retries left.
 */
export function restartsAtBoot(p: RestartPolicy, stoppedByHand: boolean, lastExit: number | null | undefined, restartCount: number): boolean {
  if (p.name === 'always') return true;
  if (p.name === 'unless-stopped') return !stoppedByHand;
  if (p.name === 'on-failure') return !stoppedByHand && lastExit === null && (p.maximumRetryCount === 0 || restartCount < p.maximumRetryCount);
  return false;
}
