import { UsageError } from '../errors.js';

/**
 * Health checks with docker's rules (moby daemon/health.go): the image's `Healthcheck` merged
 * with the --health-* flags, and how each probe result moves the status. Pure; the container's
 * supervisor runs the probes (supervisor.ts).
 */

/** As docker keeps it in the config: Test plus durations in nanoseconds (0: the default). */
export interface HealthcheckConfig {
  /** ["CMD", arg...], ["CMD-SHELL", command] or ["NONE"]. */
  Test: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  Retries?: number;
}

export interface HealthFlags {
  healthCmd?: string;
  healthInterval?: string;
  healthTimeout?: string;
  healthStartPeriod?: string;
  healthRetries?: string;
  noHealthcheck?: boolean;
  /** podman's --health-on-failure. */
  healthOnFailure?: string;
}

export type HealthOnFailure = 'none' | 'kill' | 'restart' | 'stop';

export interface HealthResult {
  Start: string;
  End: string;
  ExitCode: number;
  Output: string;
}

export interface HealthState {
  Status: 'starting' | 'healthy' | 'unhealthy';
  FailingStreak: number;
  Log: HealthResult[];
}

/** docker's defaults and limits. */
export const DEFAULT_INTERVAL_MS = 30_000;
export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_RETRIES = 3;
export const MAX_LOG_ENTRIES = 5;
export const MAX_OUTPUT_BYTES = 4096;

const UNIT_NS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** Go's time.ParseDuration, as docker's flags take them ("30s", "1m30s", "500ms"); nanoseconds. */
export function parseDuration(text: string, flag: string): number {
  // µ written as \u00b5: the packed executable's script must be ASCII (scripts/pack/pack.js).
  const re = /(\d+(?:\.\d+)?)(ns|us|\u00b5s|ms|s|m|h)/gy;
  let total = 0;
  let at = 0;
  if (text === '0') return 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * UNIT_NS[m[2]!]!;
    at = re.lastIndex;
  }
  if (text === '' || at !== text.length) throw new UsageError(`${flag} ${text}: expected a duration such as 30s, 1m30s or 500ms`);
  return Math.round(total);
}

/** docker: a non-zero interval, timeout or start period below 1 ms is refused. */
function durationFlag(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const ns = parseDuration(text, flag);
  if (ns !== 0 && ns < 1e6) throw new UsageError(`${flag} ${text}: must be at least 1ms`);
  return ns;
}

export function parseHealthOnFailure(text: string | undefined): HealthOnFailure {
  if (text === undefined) return 'none';
  if (text === 'none' || text === 'kill' || text === 'restart' || text === 'stop') return text;
  throw new UsageError(`--health-on-failure ${text}: expected none, kill, restart or stop`);
}

/**
 * The container's health check: the flags over the image's (moby mergeHealthcheck); undefined
 * when there is none (or NONE).
 */
export function mergeHealthcheck(image: unknown, flags: HealthFlags): HealthcheckConfig | undefined {
  const given = [flags.healthCmd, flags.healthInterval, flags.healthTimeout, flags.healthStartPeriod, flags.healthRetries].some((v) => v !== undefined);
  if (flags.noHealthcheck === true) {
    if (given) throw new UsageError('--no-healthcheck conflicts with --health-* options');
    return undefined;
  }
  const interval = durationFlag(flags.healthInterval, '--health-interval');
  const timeout = durationFlag(flags.healthTimeout, '--health-timeout');
  const startPeriod = durationFlag(flags.healthStartPeriod, '--health-start-period');
  let retries: number | undefined;
  if (flags.healthRetries !== undefined) {
    if (!/^\d{1,6}$/.test(flags.healthRetries)) throw new UsageError(`--health-retries ${flags.healthRetries}: expected a whole number`);
    retries = Number(flags.healthRetries);
  }
  const base = imageHealthcheck(image);
  const test = flags.healthCmd !== undefined ? ['CMD-SHELL', flags.healthCmd] : base?.Test;
  if (test === undefined || test.length === 0 || test[0] === 'NONE') return undefined;
  if (test[0] !== 'CMD' && test[0] !== 'CMD-SHELL') throw new UsageError(`health check ${JSON.stringify(test)}: the test must start with CMD, CMD-SHELL or NONE`);
  const pick = (flag: number | undefined, img: number | undefined): number | undefined => (flag !== undefined && flag !== 0 ? flag : img !== undefined && img !== 0 ? img : undefined);
  const out: HealthcheckConfig = { Test: test };
  const i = pick(interval, base?.Interval);
  const t = pick(timeout, base?.Timeout);
  const s = pick(startPeriod, base?.StartPeriod);
  const r = pick(retries, base?.Retries);
  if (i !== undefined) out.Interval = i;
  if (t !== undefined) out.Timeout = t;
  if (s !== undefined) out.StartPeriod = s;
  if (r !== undefined) out.Retries = r;
  return out;
}

/** The image config's Healthcheck, when it is well formed (an image is hostile input: ignore what is not). */
function imageHealthcheck(value: unknown): HealthcheckConfig | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (!Array.isArray(v.Test) || !v.Test.every((t): t is string => typeof t === 'string')) return undefined;
  const num = (x: unknown): number | undefined => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : undefined);
  const out: HealthcheckConfig = { Test: v.Test };
  const i = num(v.Interval);
  const t = num(v.Timeout);
  const s = num(v.StartPeriod);
  const r = num(v.Retries);
  if (i !== undefined) out.Interval = i;
  if (t !== undefined) out.Timeout = t;
  if (s !== undefined) out.StartPeriod = s;
  if (r !== undefined) out.Retries = Math.floor(r);
  return out;
}

/** The probe's argv: CMD-SHELL runs through /bin/sh -c, as docker does on Linux. */
export function probeArgv(h: HealthcheckConfig): string[] {
  return h.Test[0] === 'CMD-SHELL' ? ['/bin/sh', '-c', h.Test.slice(1).join(' ')] : h.Test.slice(1);
}

export interface HealthTiming {
  intervalMs: number;
  timeoutMs: number;
  startPeriodMs: number;
  retries: number;
}

export function healthTiming(h: HealthcheckConfig): HealthTiming {
  return {
    intervalMs: h.Interval !== undefined && h.Interval > 0 ? h.Interval / 1e6 : DEFAULT_INTERVAL_MS,
    timeoutMs: h.Timeout !== undefined && h.Timeout > 0 ? h.Timeout / 1e6 : DEFAULT_TIMEOUT_MS,
    startPeriodMs: h.StartPeriod !== undefined ? h.StartPeriod / 1e6 : 0,
    retries: h.Retries !== undefined && h.Retries > 0 ? h.Retries : DEFAULT_RETRIES,
  };
}

export function initialHealth(): HealthState {
  return { Status: 'starting', FailingStreak: 0, Log: [] };
}

/**
 * The state after one probe (moby handleProbeResult): success resets the streak and makes it
 * healthy; a failure inside the start period is logged but not counted; `retries` failures in a
 * row make it unhealthy.
 */
export function applyProbeResult(state: HealthState, result: HealthResult, timing: HealthTiming, inStartPeriod: boolean): HealthState {
  const Log = [...state.Log, result].slice(-MAX_LOG_ENTRIES);
  if (result.ExitCode === 0) return { Status: 'healthy', FailingStreak: 0, Log };
  if (state.Status === 'starting' && inStartPeriod) return { ...state, Log };
  const FailingStreak = state.FailingStreak + 1;
  return { Status: FailingStreak >= timing.retries ? 'unhealthy' : state.Status, FailingStreak, Log };
}
