import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeFs } from '../../src/io/native.js';
import { readFileInRoot, resolveUserInLayers, USER_FILE_MAX_BYTES } from '../../src/runtime/users.js';
import { ferryWithin } from '../helpers/ferry.js';
import { addImage, setupRuntime, waitFor, type RuntimeFixture } from './fixture.js';

/**
 * Security issue 10, item 5: `exec -u NAME` read the container's /etc/passwd and /etc/group by
 * host path: a FIFO swapped in hung it, and an /etc swapped for a symlink to a host directory
 * made it read the host's file. Now they are resolved inside the container's root from a
 * directory fd (openat2 RESOLVE_IN_ROOT, or the component walk where openat2 is missing), opened
 * only as regular files, non-blocking, size-capped.
 */
const native = nativeFs();
const run = promisify(execFile);
let f: RuntimeFixture;
let hostDir: string;
/**
 * `swap A B` exchanges two names with renameat2(RENAME_EXCHANGE) in a tight loop: a directory
 * and a symlink to a host directory trade places millions of times a second, so a lookup by
 * host path meets the symlink between two of its steps.
 */
const SWAP_C = [
  '#define _GNU_SOURCE',
  '#include <fcntl.h>',
  '#include <stdio.h>',
  '#include <unistd.h>',
  '#include <sys/syscall.h>',
  '#include <linux/fs.h>',
  'int main(int argc, char **argv) {',
  '  if (argc != 3) return 2;',
  '  for (;;) if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) { perror("renameat2"); return 1; }',
  '}',
].join('\n');
let swapper: Promise<void> | undefined;

/** The `swapper` image: base + /swap, compiled here from SWAP_C (once). */
async function ensureSwapper(): Promise<void> {
  swapper ??= (async () => {
    const source = join(f.work, 'swap.c');
    const binary = join(f.work, 'swap');
    await writeFile(source, SWAP_C);
    await run('cc', ['-static', '-O1', '-o', binary, source]);
    await addImage(f, 'swapper', async (r) => {
      await copyFile(binary, join(r, 'swap'));
    });
  })();
  await swapper;
}
const EVIL = 'evil:x:4242:4242:evil:/:/bin/sh\n';

async function withRoot<T>(dir: string, fn: (fd: number) => Promise<T>): Promise<T> {
  const fd = native.openDir(dir);
  try {
    return await fn(fd);
  } finally {
    native.close(fd);
  }
}


beforeAll(async () => {
  f = await setupRuntime('rt-users', ['base']);
  hostDir = join(f.work, 'host-etc');
  await mkdir(hostDir);
  await writeFile(join(hostDir, 'passwd'), EVIL);
  await writeFile(join(hostDir, 'group'), 'evil:x:4242:\n');
});
afterAll(async () => {
  await f.cleanup();
});

describe.each([true, false])('reading a file inside a root (openat2: %s)', (openat2) => {
  let n = 0;
  const root = async (): Promise<string> => {
    const dir = join(f.work, `root-${openat2}-${n++}`);
    await mkdir(join(dir, 'etc'), { recursive: true });
    return dir;
  };

  it('a FIFO as /etc/passwd is not opened: no hang, no file', async () => {
    const dir = await root();
    native.mknod(join(dir, 'etc', 'passwd'), constants.S_IFIFO | 0o644, 0, 0);
    expect(await withRoot(dir, (fd) => readFileInRoot(fd, '/etc/passwd', { openat2 }))).toBeUndefined();
  });

  it('a device node as /etc/passwd is not opened', async () => {
    const dir = await root();
    native.mknod(join(dir, 'etc', 'passwd'), constants.S_IFCHR | 0o644, 1, 5);
    expect(await withRoot(dir, (fd) => readFileInRoot(fd, '/etc/passwd', { openat2 }))).toBeUndefined();
  });

  it('/etc as a symlink to a host directory (absolute, or climbing with ..) resolves inside the root', async () => {
    for (const target of [hostDir, `../../../../../../../..${hostDir}`, `/proc/${process.pid}/root${hostDir}`]) {
      const dir = await root();
      await mkdir(join(dir, 'x'));
      await symlink(target, join(dir, 'x', 'etc'));
      expect(await withRoot(dir, (fd) => readFileInRoot(fd, '/x/etc/passwd', { openat2 })), target).toBeUndefined();
    }
  });

  it('links that stay inside the root are followed as the container would', async () => {
    const dir = await root();
    await mkdir(join(dir, 'real', 'etc'), { recursive: true });
    await writeFile(join(dir, 'real', 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
    await symlink('/real/etc', join(dir, 'alias'));
    await symlink('../../real/etc/passwd', join(dir, 'etc', 'passwd'));
    await withRoot(dir, async (fd) => {
      expect((await readFileInRoot(fd, '/alias/passwd', { openat2 }))?.toString()).toBe('root:x:0:0::/root:/bin/sh\n');
      expect((await readFileInRoot(fd, '/etc/passwd', { openat2 }))?.toString()).toBe('root:x:0:0::/root:/bin/sh\n');
      expect((await readFileInRoot(fd, '/../../etc/../real/etc/passwd', { openat2 }))?.toString()).toBe('root:x:0:0::/root:/bin/sh\n');
    });
  });

  it('a symlink loop is refused; a file over the limit is refused', async () => {
    const dir = await root();
    await symlink('/etc/b', join(dir, 'etc', 'a'));
    await symlink('/etc/a', join(dir, 'etc', 'b'));
    await writeFile(join(dir, 'etc', 'big'), Buffer.alloc(USER_FILE_MAX_BYTES + 1, 0x61));
    await withRoot(dir, async (fd) => {
      await expect(readFileInRoot(fd, '/etc/a', { openat2 })).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
      await expect(readFileInRoot(fd, '/etc/big', { openat2 })).rejects.toThrow(/over the 4194304-byte limit/);
    });
  });

  it('run -u: image layers are read from their directory fds, links resolved inside the image', async () => {
    const lower = await root();
    const top = await root();
    await writeFile(join(lower, 'etc', 'passwd'), 'app:x:1000:1000::/home/app:/bin/sh\n');
    await writeFile(join(lower, 'etc', 'group'), 'staff:x:50:app\n');
    expect(await resolveUserInLayers([top, lower], 'app', 'image t', { openat2 })).toEqual({ uid: 1000, gid: 1000, groups: [50], home: '/home/app', name: 'app' });
    native.mknod(join(top, 'etc', 'group'), constants.S_IFIFO | 0o644, 0, 0);
    expect((await resolveUserInLayers([top, lower], 'app', 'image t', { openat2 })).groups).toEqual([]);
  });
});

describe('exec -u in a container racing the lookup', () => {
  it('/etc/passwd swapped for a FIFO over and over: every exec -u finishes', async () => {
    const script = 'cp /etc/passwd /etc/passwd.real; while true; do busybox mkfifo /etc/p.f; mv -f /etc/p.f /etc/passwd; cp /etc/passwd.real /etc/p.t; mv -f /etc/p.t /etc/passwd; done';
    await f.ok(['run', '-d', '--name', 'fifo', '-u', '0', 'base', 'sh', '-c', script]);
    await waitFor(async () => (await f.ferry(['exec', 'fifo', 'test', '-p', '/etc/passwd'])).code === 0, 20_000, 'the first FIFO');
    const outcomes = new Set<string>();
    for (let k = 0; k < 25; k++) {
      // The command reads no passwd itself (busybox id would open the FIFO and wait, rightly).
      const r = await ferryWithin(f.root, 20_000, ['exec', '-u', 'app', 'fifo', 'grep', '^Uid:', '/proc/self/status']);
      expect(r.timedOut, `exec ${k} hung`).toBe(false);
      if (r.code === 0) {
        expect(r.stdout).toMatch(/^Uid:\s+1000\s/);
        outcomes.add('found');
      } else {
        expect(r.stderr).toMatch(/user app: no such user in container fifo's \/etc\/passwd/);
        outcomes.add('absent');
      }
    }
    expect(outcomes.size).toBeGreaterThan(0);
    await f.ok(['rm', '-f', 'fifo']);
  });

  const execEvil = async (name: string): Promise<void> => {
    const outcomes = new Set<string>();
    for (let k = 0; k < 25; k++) {
      const r = await ferryWithin(f.root, 20_000, ['exec', '-u', 'evil', name, 'grep', '^Uid:', '/proc/self/status']);
      expect(r.timedOut, `exec ${k} hung`).toBe(false);
      expect(r.stdout).not.toMatch(/4242/);
      expect(r.stderr).not.toContain(f.work);
      if (r.code === 0) {
        // The container's own evil user (its directory was in place).
        expect(r.stdout).toMatch(/^Uid:\s+777\s/);
        outcomes.add('own');
      } else {
        expect(r.stderr).toMatch(/user evil: no such user/);
        outcomes.add('absent');
      }
    }
    expect(outcomes.size).toBeGreaterThan(0);
  };

  it("/etc/passwd a symlink into a directory that is swapped for a symlink to a host directory: exec -u never reads the host's passwd", async () => {
    await ensureSwapper();
    const script = [
      'mkdir /userdb && echo "evil:x:777:777:own:/:/bin/sh" > /userdb/passwd',
      'ln -sf /userdb/passwd /etc/passwd',
      `ln -s ${hostDir} /userdb-host`,
      'exec /swap /userdb /userdb-host',
    ].join(' && ');
    await f.ok(['run', '-d', '--name', 'dataswap', '-u', '0', 'swapper', 'sh', '-c', script]);
    await waitFor(async () => (await f.ferry(['exec', 'dataswap', 'test', '-d', '/userdb-host/.'])).code === 0, 20_000, 'the swapping');
    await execEvil('dataswap');
    await f.ok(['rm', '-f', 'dataswap']);
  });

  it("/etc itself swapped for a symlink to a host directory (a privileged container unmounts its /etc files first): exec -u never reads the host's passwd", async () => {
    await ensureSwapper();
    const script = [
      'umount /etc/hosts /etc/hostname /etc/resolv.conf',
      'cp -a /etc /etc-own && rm -rf /etc && mv /etc-own /etc',
      'echo "evil:x:777:777:own:/:/bin/sh" >> /etc/passwd',
      `ln -s ${hostDir} /etc-host`,
      'exec /swap /etc /etc-host',
    ].join(' && ');
    await f.ok(['run', '-d', '--name', 'etcswap', '--privileged', '-u', '0', 'swapper', 'sh', '-c', script]);
    await waitFor(async () => (await f.ferry(['exec', 'etcswap', 'test', '-f', '/etc-host/passwd'])).code === 0, 20_000, 'the swapping');
    await execEvil('etcswap');
    await f.ok(['rm', '-f', 'etcswap']);
  });
});
