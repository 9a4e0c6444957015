import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/ferry.js';
import { addImage, mountsMentioning, setupRuntime, sha256, type RuntimeFixture } from './fixture.js';

/**
 * Hostile images and flags, named after the attacks they repeat (research/runtime-and-unpack.md
 * §5): each image is busybox `base` plus one layer (see addImage).
 */
let f: RuntimeFixture;

beforeAll(async () => {
  f = await setupRuntime('rt-sec', ['base']);
});
afterAll(async () => {
  await f.cleanup();
});

describe('hostile images', () => {
  it('runc CVE-2019-19921: an image whose /proc is a symlink is refused, nothing is mounted through it', async () => {
    const target = join(f.work, 'proc-target');
    await addImage(f, 'symlinked-proc', async (r) => {
      await symlink(target, join(r, 'proc'));
    });
    const r = await f.ferry(['run', '--rm', 'symlinked-proc', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/resolve \/proc in the container: Too many levels of symbolic links|mount proc on \/proc/);
    expect(existsSync(target)).toBe(false);
    expect(await mountsMentioning(f.root)).toEqual([]);
  });

  it('docker cp CVE-2019-14271 family: /etc/passwd symlinked to a host path resolves inside the image, never on the host', async () => {
    const hostPasswd = join(f.work, 'host-passwd');
    await writeFile(hostPasswd, 'evil:x:0:0:evil:/:/bin/sh\n');
    await addImage(f, 'symlinked-passwd', async (r) => {
      await mkdir(join(r, 'etc'));
      await symlink(hostPasswd, join(r, 'etc', 'passwd'));
      await symlink(`../../../../../../../..${hostPasswd}`, join(r, 'etc', 'group'));
    });
    const r = await f.ferry(['run', '--rm', '-u', 'evil', 'symlinked-passwd', 'id']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/user evil: no such user/);
    // Numeric users still work: the image simply has no passwd.
    expect(await f.ok(['run', '--rm', '-u', '7:8', 'symlinked-passwd', 'sh', '-c', 'id -u; id -g'])).toBe('7\n8\n');
  });

  it('a volume target through an image symlink lands inside the container root, not on the host', async () => {
    const hostDir = join(f.work, 'escape-target');
    await mkdir(hostDir);
    await addImage(f, 'symlinked-volume', async (r) => {
      await symlink(hostDir, join(r, 'evil'));
    });
    const data = join(f.work, 'vol-data');
    await mkdir(data);
    await writeFile(join(data, 'marker'), 'vol\n');
    expect(await f.ok(['run', '--rm', '-v', `${data}:/evil/mnt`, 'symlinked-volume', 'cat', '/evil/mnt/marker'])).toBe('vol\n');
    // Resolved inside the root: the mount point was made at <root>/<hostDir>/mnt, in the container's layer.
    expect(existsSync(join(hostDir, 'mnt'))).toBe(false);
  });

  it('runc CVE-2024-21626: a working directory of /proc/self/fd/N stays inside the container or fails', async () => {
    await addImage(f, 'fd-workdir', async (r) => {
      await mkdir(join(r, 'tmp'), { recursive: true });
    }, { WorkingDir: '/proc/self/fd/3' });
    for (const flags of [[], ['-w', '/proc/self/fd/4'], ['-w', '/proc/self/fd/7']]) {
      const r = await f.ferry(['run', '--rm', ...flags, 'fd-workdir', 'sh', '-c', 'pwd; ls ..']);
      if (r.code === 0) expect(r.stdout.startsWith('/')).toBe(true);
      else expect(r.stderr).toMatch(/chdir to the working directory|outside the container|Not a directory|No such file/);
      expect(r.stdout).not.toContain('containers');
    }
  });

  it('runc CVE-2019-5736: the container cannot reach or overwrite the launcher binary through /proc', async () => {
    const launcher = join(REPO_ROOT, 'build', 'Release', 'ferry-launch');
    const before = sha256(await readFile(launcher));
    const r = await f.ferry(['run', '--rm', 'base', 'sh', '-c', 'echo x >> /proc/1/exe && echo WROTE; cat /proc/1/exe > /dev/null && echo READ; ls -l /proc/1/fd 2>&1 | grep -c . ; true']);
    expect(r.stdout).not.toMatch(/WROTE|READ/);
    expect(sha256(await readFile(launcher))).toBe(before);
  });

  it('device nodes made in the container cannot be opened (the root filesystem is nodev)', async () => {
    const r = await f.ferry(['run', '--rm', 'base', 'sh', '-c', 'mknod /tmp/mem c 1 1 && echo made; head -c 1 /tmp/mem > /dev/null && echo OPENED']);
    expect(r.stdout).toBe('made\n');
    expect(r.stderr).toMatch(/Permission denied|Operation not permitted/);
  });

  it('only fds 0-2 reach the command (no leaked ferry or launcher fd)', async () => {
    expect(await f.ok(['run', '--rm', 'base', 'sh', '-c', 'ls /proc/self/fd'])).toBe('0\n1\n2\n3\n');
    // (3 is ls's own directory handle on /proc/self/fd.)
  });

  it('the container environment has nothing of ferry\'s own environment', async () => {
    const out = await f.ok(['run', '--rm', 'base', 'sh', '-c', 'env; cat /proc/1/environ | tr "\\0" "\\n"'], { env: { FERRY_SECRET_TEST: 'leak' } });
    expect(out).not.toContain('FERRY_SECRET_TEST');
  });
});


