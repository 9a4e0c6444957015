import { createHash } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseMountInfo } from '../../src/io/mounts.js';
import { nativePart, packedBuild, untrustedReason, usePackedBuild, versionText, type NativePartName, type PackedBuild } from '../../src/io/native-parts.js';

/**
 * The packed executable's native parts: extracted by hash into a root-only directory (never one
 * another user can write, never a noexec mount), checked before every use, extracted again when
 * the file on disk was changed. Tests run as root (as CI does).
 */

let base: string;

beforeAll(async () => {
  // Not under /tmp: a world-writable directory anywhere above is refused, which is the point.
  base = await mkdtemp('/var/lib/ferry-native-parts-test-');
});

afterEach(() => {
  usePackedBuild(undefined);
});

afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function fakeBuild(dir: string, bytes: Buffer, read: (name: NativePartName) => Uint8Array = () => bytes): PackedBuild {
  return {
    ferryVersion: '9.9.9',
    nodeVersion: 'v24.0.0',
    platform: 'linux-x64',
    parts: { 'ferry-launch': { sha256: sha(bytes), size: bytes.length } },
    read,
    extractDirs: [dir],
  };
}

describe('native parts of the packed executable', () => {
  it('extracts a part once by its hash into a root-only directory and checks it before every use', async () => {
    const bytes = Buffer.from('#!/bin/sh\necho launcher\n');
    const dir = join(base, 'parts');
    const read = vi.fn(() => bytes);
    usePackedBuild(fakeBuild(dir, bytes, read));
    const path = nativePart('ferry-launch');
    expect(path).toBe(join(dir, `sha256-${sha(bytes)}`, 'ferry-launch'));
    expect(await readFile(path)).toEqual(bytes);
    for (const p of [dir, join(dir, `sha256-${sha(bytes)}`), path]) expect(((await stat(p)).mode & 0o777).toString(8)).toBe('700');
    expect(nativePart('ferry-launch')).toBe(path);
    expect(read).toHaveBeenCalledTimes(1);
    expect(packedBuild()?.ferryVersion).toBe('9.9.9');
    expect(versionText('9.9.9')).toBe('9.9.9 (packed linux-x64, Node.js v24.0.0)');
  });

  it('extracts a part again when the file on disk was changed, and says so', async () => {
    const bytes = Buffer.from('the real launcher');
    const dir = join(base, 'tampered');
    usePackedBuild(fakeBuild(dir, bytes));
    const path = nativePart('ferry-launch');
    await writeFile(path, 'a replaced launcher');
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(nativePart('ferry-launch')).toBe(path);
      expect(stderr).toHaveBeenCalledWith(`ferry: ${path} did not match its sha256; extracting it again\n`);
    } finally {
      stderr.mockRestore();
    }
    expect(await readFile(path)).toEqual(bytes);
  });

  it('refuses a part whose bytes inside the executable do not match the hash it carries', () => {
    const bytes = Buffer.from('launcher');
    usePackedBuild(fakeBuild(join(base, 'damaged'), bytes, () => Buffer.from('launcheR')));
    expect(() => nativePart('ferry-launch')).toThrow(/ferry-launch inside .* does not match its sha256/);
  });

  it('never extracts below a directory another user can write to (/tmp, a group-writable or foreign-owned one)', async () => {
    expect(untrustedReason('/tmp')).toBe('/tmp is writable by all users (mode 1777)');
    const shared = join(base, 'shared');
    await mkdir(join(shared, 'ferry'), { recursive: true });
    await chmod(shared, 0o775);
    expect(untrustedReason(join(shared, 'ferry'))).toBe(`${shared} is writable by its group (mode 775)`);
    const foreign = join(base, 'foreign');
    await mkdir(foreign);
    await chown(foreign, 65534, 65534);
    expect(untrustedReason(foreign)).toBe(`${foreign} is owned by uid 65534`);

    const bytes = Buffer.from('launcher');
    usePackedBuild({ ...fakeBuild(join(shared, 'ferry', 'x'), bytes), extractDirs: [join(shared, 'ferry', 'x'), '/tmp/ferry-native-parts-test'] });
    expect(() => nativePart('ferry-launch')).toThrow(/no directory to extract ferry's native parts into \(.*writable by its group.*; \/tmp\/ferry-native-parts-test: \/tmp is writable by all users/);
    await rm('/tmp/ferry-native-parts-test', { recursive: true, force: true });
  });

  it('finds noexec in the mount table, escapes and all', () => {
    const entries = parseMountInfo(
      '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n' +
        '40 22 0:35 / /tmp rw,nosuid,nodev,noexec,relatime shared:20 - tmpfs tmpfs rw\n' +
        '41 22 0:36 / /mnt/with\\040space ro,relatime - ext4 /dev/sdb1 ro\n',
    );
    expect(entries.map((e) => [e.mountPoint, e.fsType, e.options.includes('noexec')])).toEqual([
      ['/', 'ext4', false],
      ['/tmp', 'tmpfs', true],
      ['/mnt/with space', 'ext4', false],
    ]);
  });

  it('uses node-gyp\'s build/Release from a source checkout', () => {
    expect(nativePart('ferry-launch')).toMatch(/\/build\/Release\/ferry-launch$/);
    expect(versionText('1.2.3')).toBe('1.2.3');
  });
});
