import { describe, expect, it } from 'vitest';
import { applyProbeResult, healthTiming, initialHealth, mergeHealthcheck, parseDuration, probeArgv, type HealthResult } from '../../src/runtime/healthcheck.js';
import { parseMount } from '../../src/runtime/mount-flag.js';
import { nextBackoff, parseRestartPolicy, restartsAtBoot, shouldRestart } from '../../src/runtime/restart-policy.js';

/** The pure rules behind restart policies, health checks and --mount (docker's, as moby implements them). */
describe('restart policy rules', () => {
  it('parses docker spellings and refuses the rest', () => {
    expect(parseRestartPolicy('no')).toEqual({ name: 'no', maximumRetryCount: 0 });
    expect(parseRestartPolicy('on-failure')).toEqual({ name: 'on-failure', maximumRetryCount: 0 });
    expect(parseRestartPolicy('on-failure:3')).toEqual({ name: 'on-failure', maximumRetryCount: 3 });
    expect(parseRestartPolicy('unless-stopped')).toEqual({ name: 'unless-stopped', maximumRetryCount: 0 });
    for (const bad of ['', 'yes', 'always:2', 'on-failure:x', 'on-failure:-1', 'on-failure:1:2']) expect(() => parseRestartPolicy(bad), bad).toThrow(/--restart/);
  });

  it('back-off: 100 ms doubling up to a minute, back to 100 ms after a run of 10 s', () => {
    const seq: number[] = [];
    let b = 0;
    for (let i = 0; i < 12; i++) seq.push((b = nextBackoff(b, 50)));
    expect(seq).toEqual([100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]);
    expect(nextBackoff(60000, 10_000)).toBe(100);
    expect(nextBackoff(800, 9_999)).toBe(1600);
  });

  it('on-failure counts retries and ignores a clean exit; always and unless-stopped always restart; no never', () => {
    const p = parseRestartPolicy('on-failure:3');
    expect([0, 1, 2, 3].map((n) => shouldRestart(p, 1, n))).toEqual([true, true, true, false]);
    expect(shouldRestart(p, 0, 0)).toBe(false);
    expect(shouldRestart(parseRestartPolicy('on-failure'), 1, 1000)).toBe(true);
    expect(shouldRestart(parseRestartPolicy('always'), 0, 1000)).toBe(true);
    expect(shouldRestart(parseRestartPolicy('unless-stopped'), 0, 0)).toBe(true);
    expect(shouldRestart(parseRestartPolicy('no'), 1, 0)).toBe(false);
  });

  it("at boot: always even when stopped by hand, unless-stopped only when not, on-failure only when the crash cut it short", () => {
    expect(restartsAtBoot(parseRestartPolicy('always'), true, 0, 0)).toBe(true);
    expect(restartsAtBoot(parseRestartPolicy('unless-stopped'), false, null, 0)).toBe(true);
    expect(restartsAtBoot(parseRestartPolicy('unless-stopped'), true, 0, 0)).toBe(false);
    expect(restartsAtBoot(parseRestartPolicy('on-failure:2'), false, null, 1)).toBe(true);
    expect(restartsAtBoot(parseRestartPolicy('on-failure:2'), false, null, 2)).toBe(false);
    expect(restartsAtBoot(parseRestartPolicy('on-failure'), false, 1, 0)).toBe(false);
    expect(restartsAtBoot(parseRestartPolicy('no'), false, null, 0)).toBe(false);
  });
});

describe('health check rules', () => {
  it("Go durations as docker's flags take them", () => {
    expect(parseDuration('30s', 'x')).toBe(30e9);
    expect(parseDuration('1m30s', 'x')).toBe(90e9);
    expect(parseDuration('500ms', 'x')).toBe(500e6);
    expect(parseDuration('1.5h', 'x')).toBe(5400e9);
    expect(parseDuration('0', 'x')).toBe(0);
    for (const bad of ['', '5', '5x', 's', '1m 2s']) expect(() => parseDuration(bad, '--health-interval'), bad).toThrow(/--health-interval/);
  });

  it('flags override the image field by field; NONE and --no-healthcheck disable it; bad image fields are ignored', () => {
    const image = { Test: ['CMD', 'check'], Interval: 5e9, Retries: 7 };
    expect(mergeHealthcheck(image, {})).toEqual(image);
    expect(mergeHealthcheck(image, { healthInterval: '1s' })).toEqual({ Test: ['CMD', 'check'], Interval: 1e9, Retries: 7 });
    expect(mergeHealthcheck(image, { healthCmd: 'curl -f x' })).toEqual({ Test: ['CMD-SHELL', 'curl -f x'], Interval: 5e9, Retries: 7 });
    expect(mergeHealthcheck(image, { noHealthcheck: true })).toBeUndefined();
    expect(mergeHealthcheck({ Test: ['NONE'] }, {})).toBeUndefined();
    expect(mergeHealthcheck({ Test: 'not a list', Interval: -1 }, {})).toBeUndefined();
    expect(mergeHealthcheck({ Test: ['CMD', 'x'], Interval: 'soon' }, {})).toEqual({ Test: ['CMD', 'x'] });
    expect(() => mergeHealthcheck(image, { noHealthcheck: true, healthRetries: '2' })).toThrow(/conflicts/);
    expect(() => mergeHealthcheck(undefined, { healthCmd: 'x', healthTimeout: '10us' })).toThrow(/at least 1ms/);
    expect(probeArgv({ Test: ['CMD-SHELL', 'a && b'] })).toEqual(['/bin/sh', '-c', 'a && b']);
    expect(probeArgv({ Test: ['CMD', 'a', 'b c'] })).toEqual(['a', 'b c']);
    expect(healthTiming({ Test: ['CMD', 'x'] })).toEqual({ intervalMs: 30_000, timeoutMs: 30_000, startPeriodMs: 0, retries: 3 });
  });

  it('results move the status: success heals, failures in the start period do not count, retries failures make it unhealthy, 5 results kept', () => {
    const timing = healthTiming({ Test: ['CMD', 'x'], Retries: 2 });
    const r = (code: number): HealthResult => ({ Start: 's', End: 'e', ExitCode: code, Output: '' });
    let s = applyProbeResult(initialHealth(), r(1), timing, true);
    expect(s).toMatchObject({ Status: 'starting', FailingStreak: 0 });
    s = applyProbeResult(s, r(1), timing, false);
    expect(s).toMatchObject({ Status: 'starting', FailingStreak: 1 });
    s = applyProbeResult(s, r(-1), timing, false);
    expect(s).toMatchObject({ Status: 'unhealthy', FailingStreak: 2 });
    s = applyProbeResult(s, r(0), timing, false);
    expect(s).toMatchObject({ Status: 'healthy', FailingStreak: 0 });
    s = applyProbeResult(s, r(1), timing, true); // after the first success the start period is over
    expect(s).toMatchObject({ Status: 'healthy', FailingStreak: 1 });
    for (let i = 0; i < 5; i++) s = applyProbeResult(s, r(2), timing, false);
    expect(s.Status).toBe('unhealthy');
    expect(s.Log).toHaveLength(5);
  });
});

describe('--mount parsing', () => {
  it('maps the three types and keeps the nodev/nosuid rules', () => {
    expect(parseMount('type=bind,source=/srv/a,target=/a,readonly')).toEqual({ volume: { source: '/srv/a', destination: '/a', readOnly: true }, mustExist: '/srv/a' });
    expect(parseMount('type=volume,src=data,dst=/d,volume-nocopy')).toEqual({ volume: { name: 'data', bind: { source: '', destination: '/d', readOnly: false }, noCopy: true } });
    expect(parseMount('src=data,target=/d,ro=true')).toMatchObject({ volume: { name: 'data', bind: { readOnly: true } } });
    expect(parseMount('type=volume,target=/anon')).toMatchObject({ volume: { anonymous: true, bind: { destination: '/anon' } } });
    expect(parseMount('type=tmpfs,target=/t,tmpfs-size=64m')).toEqual({ tmpfs: { tmpfs: true, destination: '/t', readOnly: false, data: 'size=64m,mode=1777', suid: false, exec: false } });
    expect(parseMount('"type=bind","source=/a,b",target=/x')).toMatchObject({ volume: { source: '/a,b' } });
    for (const bad of ['target=/x,dev', 'type=tmpfs,target=/x,tmpfs-size=lots', 'type=bind,source=rel,target=/x', 'type=volume,source=v,target=/', 'type=volume,source=v,target=rel', 'type=volume,source=-v,target=/x', 'type=volume,source=v,target=/x,readonly=maybe', 'type=bind,source=/a,target=/x,tmpfs-size=1m']) {
      expect(() => parseMount(bad), bad).toThrow(/--mount|volume name/);
    }
  });
});
