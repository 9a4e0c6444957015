import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreLock } from '../../src/store/lock.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('lock');
});
afterAll(async () => {
  await removeDir(dir);
});

describe('store lock', () => {
  it('serialises critical sections of one process', async () => {
    const lock = new StoreLock(join(dir, 'serial'));
    const order: string[] = [];
    const section = (name: string) =>
      lock.with(async () => {
        order.push(`${name}+`);
        await new Promise((r) => setTimeout(r, 10));
        order.push(`${name}-`);
      });
    await Promise.all([section('a'), section('b'), section('c')]);
    expect(order).toEqual(['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
  });

  it('takes over a stale lock left by a dead process', async () => {
    const path = join(dir, 'stale');
    await writeFile(path, '999999999.12345\n');
    const lock = new StoreLock(path, 2_000);
    expect(await lock.with(async () => (await readFile(path, 'utf8')).trim())).toMatch(new RegExp(`^${process.pid}\\.`));
  });

  it('waits for a live holder, then gives IN_USE naming it', async () => {
    const path = join(dir, 'held');
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    const start = (await readFile(`/proc/${sleeper.pid}/stat`, 'latin1')).split(') ')[1]!.split(' ')[19];
    await writeFile(path, `${sleeper.pid}.${start}\n`);
    try {
      const lock = new StoreLock(path, 300);
      await expect(lock.with(async () => 1)).rejects.toMatchObject({ code: 'IN_USE', message: new RegExp(`process ${sleeper.pid}`) });
      // A pid reused by another process (different start time) is not the holder.
      await writeFile(path, `${sleeper.pid}.1\n`);
      expect(await lock.with(async () => 2)).toBe(2);
    } finally {
      sleeper.kill();
    }
  });
});
