import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry } from '../helpers/ferry.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * Usage errors exit 2 and are found before any work: the registry named here listens nowhere
 * (port 1), the store and cache directories must stay untouched.
 */
let work: string;
let env: Record<string, string>;
const NOWHERE = '127.0.0.1:1/test/app:latest';

beforeAll(async () => {
  work = await makeTempDir('e2e-usage');
  env = { FERRY_CACHE_DIR: join(work, 'cache'), FERRY_ROOT: join(work, 'store') };
});

afterAll(async () => {
  await removeDir(work);
});

async function untouched(): Promise<void> {
  expect(await readdir(work)).toEqual([]);
}

describe('usage errors exit 2 before any network or disk work', () => {
  it.each([
    [['export', '--level', '99', '-o', 'x.tar.zst', NOWHERE], /invalid compression level 99/],
    [['export', '--window-log', '40', '-o', 'x.tar.zst', NOWHERE], /invalid window log 40/],
    [['export', '--platform', 'linux/', '-o', 'x.tar.zst', NOWHERE], /invalid platform "linux\/"/],
    [['export', '--split', 'lots', '-o', 'x.tar.zst', NOWHERE], /invalid size "lots"/],
    [['import', '--platform', 'linux/', 'nothing.tar.zst'], /invalid platform "linux\/"/],
    [['push', '--platform', 'linux/', 'app', NOWHERE], /invalid platform "linux\/"/],
    [['pull', '--platform', 'linux/', NOWHERE], /invalid platform "linux\/"/],
    [['pull', '--jobs', '0', NOWHERE], /--jobs "0"/],
  ])('ferry %j', async (args, message) => {
    const r = await runFerry(args, { env, cwd: work });
    expect(r.stderr).toMatch(message);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    await untouched();
  });
});
