import { createHash, randomBytes } from 'node:crypto';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nativeFs } from '../../src/io/native.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/** What the child wrote on its fd 3 (the status socket), once it closed it. */
function readAll(fd: number): Promise<string> {
  const sock = new Socket({ fd, readable: true, writable: true });
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.once('end', () => {
      sock.destroy();
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    sock.once('error', reject);
  });
}

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir('native-spawn');
});
afterEach(async () => {
  await removeDir(dir);
});

describe('sha256 (OpenSSL inside Node, for small blobs read back)', () => {
  it('is the same digest node:crypto computes', () => {
    for (const bytes of [Buffer.alloc(0), Buffer.from('abc'), randomBytes(1 << 20 | 7)]) {
      expect(nativeFs().sha256(bytes)).toBe(createHash('sha256').update(bytes).digest('hex'));
    }
  });

  it('takes only a Buffer', () => {
    expect(() => nativeFs().sha256('abc' as unknown as Buffer)).toThrow(/Buffer/);
  });
});

describe('spawnSession and waitExit (the launcher started without libuv fork)', () => {
  const native = nativeFs();

  it('fd 3 is a socket to the child; fds 0-2 are the ones given; no environment; its own session; the exit code comes back', async () => {
    const out = join(dir, 'out');
    const fd = openSync(out, 'w');
    try {
      const script = 'echo "env:$(env | grep -v ^PWD= | wc -l) sid:$(cut -d" " -f6 /proc/$$/stat) pid:$$" >&3; echo to-stdout; exit 7';
      const [pid, statusFd] = native.spawnSession('/bin/sh', ['-c', script], [0, fd, 2], Buffer.alloc(0));
      const status = await readAll(statusFd);
      expect(await native.waitExit(pid)).toBe(7);
      // sh's $$ is the pid we were given, and it leads its own session (setsid).
      expect(status.trim()).toBe(`env:0 sid:${pid} pid:${pid}`);
      expect(readFileSync(out, 'utf8')).toBe('to-stdout\n');
    } finally {
      closeSync(fd);
    }
  });

  it('a child killed by signal N exits 128+N; signals Node ignores (SIGPIPE) are at their default in the child', async () => {
    const [pid, statusFd] = native.spawnSession('/bin/sh', ['-c', 'kill -TERM $$'], [0, 1, 2], Buffer.alloc(0));
    await readAll(statusFd);
    expect(await native.waitExit(pid)).toBe(128 + 15);
    // A shell cannot undo a signal ignored when it started: SIGPIPE kills it only if at its default.
    const [pid2, statusFd2] = native.spawnSession('/bin/sh', ['-c', 'kill -PIPE $$'], [0, 1, 2], Buffer.alloc(0));
    expect(await readAll(statusFd2)).toBe('');
    expect(await native.waitExit(pid2)).toBe(128 + 13);
  });

  it('sends the input on fd 3 at once and shuts its writing down, so the child reads it to EOF', async () => {
    const input = Buffer.from('rootfs=/x\0mode=run\0'.repeat(500));
    const [pid, statusFd] = native.spawnSession('/bin/sh', ['-c', 'n=$(cat <&3 | wc -c); echo "read:$n" >&3'], [0, 1, 2], input);
    expect((await readAll(statusFd)).trim()).toBe(`read:${input.length}`);
    expect(await native.waitExit(pid)).toBe(0);
  });

  it('a child that exits without reading its input is no error: its exit code comes back', async () => {
    const [pid, statusFd] = native.spawnSession('/bin/sh', ['-c', 'exit 2'], [0, 1, 2], Buffer.alloc(64 * 1024, 1));
    await readAll(statusFd).catch(() => '');
    expect(await native.waitExit(pid)).toBe(2);
  });

  it('a program that cannot be executed is an error naming it (ENOENT)', () => {
    const missing = join(dir, 'no-such-launcher');
    expect(() => native.spawnSession(missing, [], [0, 1, 2], Buffer.alloc(0))).toThrow(expect.objectContaining({ code: 'ENOENT', message: expect.stringContaining(missing) as string }));
  });
});
