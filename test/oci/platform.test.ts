import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import {
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  parsePlatform,
  parsePlatformList,
  platformMatches,
  type Platform,
} from '../../src/oci/platform.js';

describe('parsePlatform / normalizePlatform', () => {
  it.each<[string, Platform]>([
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }],
    ['linux/x86_64', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v1', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v3', { os: 'linux', architecture: 'amd64', variant: 'v3' }],
    ['linux/arm64', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ['linux/arm64/8', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ['linux/aarch64', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ['linux/arm', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/6', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['linux/arm/v5', { os: 'linux', architecture: 'arm', variant: 'v5' }],
    ['linux/armhf', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/i386', { os: 'linux', architecture: '386' }],
    ['Linux/AMD64', { os: 'linux', architecture: 'amd64' }],
    [' linux/s390x ', { os: 'linux', architecture: 's390x' }],
  ])('%s', (text, want) => {
    expect(parsePlatform(text)).toEqual(want);
  });

  it.each(['linux', 'linux/', '/amd64', 'linux/arm/v7/x', '', 'linux//v7'])('%j is a usage error', (text) => {
    try {
      parsePlatform(text);
      expect.unreachable();
    } catch (err) {
      expect(isFerryError(err, 'USAGE')).toBe(true);
      expect((err as Error).message).toContain(`invalid platform "${text}"`);
    }
  });

  it('keeps os.version', () => {
    expect(normalizePlatform({ os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.1' })).toEqual({
      os: 'windows',
      architecture: 'amd64',
      'os.version': '10.0.17763.1',
    });
  });
});

describe('formatPlatform', () => {
  it.each<[Platform, string]>([
    [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, 'linux/arm64'],
    [{ os: 'linux', architecture: 'aarch64' }, 'linux/arm64'],
    [{ os: 'linux', architecture: 'arm' }, 'linux/arm/v7'],
    [{ os: 'linux', architecture: 'x86_64' }, 'linux/amd64'],
    [{ os: 'linux', architecture: 'arm', variant: 'v6' }, 'linux/arm/v6'],
  ])('%j -> %s', (p, want) => {
    expect(formatPlatform(p)).toBe(want);
  });
});

describe('platformMatches', () => {
  const amd64 = { os: 'linux', architecture: 'amd64' };
  const arm64 = { os: 'linux', architecture: 'arm64' };
  const arm64v8 = { os: 'linux', architecture: 'arm64', variant: 'v8' };
  const armv6 = { os: 'linux', architecture: 'arm', variant: 'v6' };
  const armv7 = { os: 'linux', architecture: 'arm', variant: 'v7' };

  it('arm64 = arm64/v8 either way round', () => {
    expect(platformMatches(arm64, arm64v8)).toBe(true);
    expect(platformMatches(arm64v8, arm64)).toBe(true);
    expect(platformMatches({ os: 'linux', architecture: 'aarch64' }, arm64v8)).toBe(true);
  });

  it('os and architecture must agree', () => {
    expect(platformMatches(amd64, arm64)).toBe(false);
    expect(platformMatches({ os: 'windows', architecture: 'amd64' }, amd64)).toBe(false);
    expect(platformMatches({ os: 'linux', architecture: 'x86_64' }, amd64)).toBe(true);
  });

  it('a variant asked for must match; none asked for matches any', () => {
    expect(platformMatches(parsePlatform('linux/arm/v7'), armv6)).toBe(false);
    expect(platformMatches(parsePlatform('linux/arm/v7'), armv7)).toBe(true);
    expect(platformMatches(parsePlatform('linux/arm/v7'), { os: 'linux', architecture: 'arm' })).toBe(true);
    expect(platformMatches({ os: 'linux', architecture: 'arm' }, armv6)).toBe(true);
  });
});

describe('hostPlatform / parsePlatformList', () => {
  it('hostPlatform is this machine in OCI terms', () => {
    const host = hostPlatform();
    expect(host.os).toBe(process.platform);
    const want = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386' }[process.arch as string] ?? process.arch;
    expect(host.architecture).toBe(want);
    expect(host).toEqual(normalizePlatform(host));
  });

  it('defaults to the host, "all" means every platform, else a comma list', () => {
    expect(parsePlatformList(undefined)).toEqual([hostPlatform()]);
    expect(parsePlatformList('')).toEqual([hostPlatform()]);
    expect(parsePlatformList(' all ')).toBe('all');
    expect(parsePlatformList('linux/amd64,linux/arm64')).toEqual([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
    ]);
    expect(() => parsePlatformList('linux/amd64,linux')).toThrow(/invalid platform "linux"/);
  });
});
