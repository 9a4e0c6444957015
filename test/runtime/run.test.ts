import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APP_EXPECTATIONS } from '../helpers/test-images.js';
import { addImage, mountsMentioning, setupRuntime, type RuntimeFixture } from './fixture.js';

/**
 * `ferry run` as a user runs it (bin/ferry, dist/ built by `npm test`), on the busybox test images
 * imported into a fresh store: the image config and its overrides, exit codes, and isolation.
 */
let f: RuntimeFixture;

beforeAll(async () => {
  f = await setupRuntime('rt-run');
});
afterAll(async () => {
  await f.cleanup();
});

describe('ferry run: the image config and its overrides', () => {
  it('runs Entrypoint + Cmd as the image User, in its WorkingDir, with its Env', async () => {
    const out = await f.ok(['run', '--rm', 'app']);
    expect(out).toBe(`${APP_EXPECTATIONS.output}\ncwd=/opt/app uid=1000 mode=test\n`);
  });

  it('-e, --env-file, -w, -u and arguments after the image override them', async () => {
    const envFile = join(f.work, 'env.list');
    await writeFile(envFile, '# comment\nFROM_FILE=yes\nAPP_MODE=from-file\n');
    const out = await f.ok(['run', '--rm', '--env-file', envFile, '-e', 'APP_MODE=prod', '-w', '/tmp', '-u', '0', 'app', 'bye']);
    expect(out).toBe('app says: bye\ncwd=/tmp uid=0 mode=prod\n');
  });

  it('--entrypoint replaces the entrypoint and drops the image Cmd; flags after the image are the command\'s', async () => {
    const out = await f.ok(['run', '--rm', '--entrypoint', '/bin/sh', 'app', '-c', 'echo "$0 $*"; id -u; id -g; id -G; echo $HOME $FROM_HOST', 'x', '-i']);
    expect(out).toBe('x -i\n1000\n1000\n1000\n/home/app\n');
    const env = await f.ok(['run', '--rm', '-e', 'FROM_HOST', 'base', 'sh', '-c', 'echo $FROM_HOST; echo $PATH; echo $HOME'], { env: { FROM_HOST: 'host-value' } });
    expect(env).toBe('host-value\n/usr/local/bin:/usr/bin:/bin\n/root\n');
  });

  it('user and group names come from the image\'s /etc/passwd and /etc/group', async () => {
    expect(await f.ok(['run', '--rm', '-u', 'app:nogroup', 'base', 'id'])).toBe('uid=1000(app) gid=65534(nogroup)\n');
    expect(await f.ok(['run', '--rm', '-u', '4242:4343', 'base', 'sh', '-c', 'id -u; id -g'])).toBe('4242\n4343\n');
    const r = await f.ferry(['run', '--rm', '-u', 'nosuchuser', 'base', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/user nosuchuser: no such user in image docker\.io\/library\/base:latest's \/etc\/passwd/);
  });

  it('supplementary groups are the image\'s /etc/group entries that list the user', async () => {
    await addImage(f, 'groups', async (r) => {
      await mkdir(join(r, 'etc'));
      await writeFile(join(r, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nweb:x:500:500:web:/srv:/bin/sh\n');
      await writeFile(join(r, 'etc', 'group'), 'root:x:0:\nweb:x:500:\nwheel:x:10:web\naudio:x:29:other,web\n');
    }, { User: 'web' });
    expect(await f.ok(['run', '--rm', 'groups', 'sh', '-c', 'id; echo $HOME'])).toBe('uid=500(web) gid=500(web) groups=10(wheel),29(audio)\n/srv\n');
    // An explicit group drops them (runc).
    expect(await f.ok(['run', '--rm', '-u', 'web:wheel', 'groups', 'id'])).toBe('uid=500(web) gid=10(wheel)\n');
  });

  it('creates a missing working directory, as docker does', async () => {
    expect(await f.ok(['run', '--rm', '-w', '/new/dir', 'base', 'pwd'])).toBe('/new/dir\n');
  });
});

describe('ferry run: exit codes', () => {
  it('propagates the exit code, 128+N for a signal, 127/126 for commands that cannot run', async () => {
    expect((await f.ferry(['run', '--rm', 'base', 'sh', '-c', 'exit 7'])).code).toBe(7);
    expect((await f.ferry(['run', '--rm', 'base', 'sh', '-c', 'kill -9 $$'])).code).toBe(137);
    const missing = await f.ferry(['run', '--rm', 'base', 'no-such-command']);
    expect(missing.code).toBe(127);
    expect(missing.stderr).toMatch(/exec no-such-command: executable file not found in \$PATH/);
    const notExec = await f.ferry(['run', '--rm', 'base', '/etc/passwd']);
    expect(notExec.code).toBe(126);
    expect(notExec.stderr).toMatch(/exec \/etc\/passwd: Permission denied/);
    expect((await f.ferry(['run', '--rm', 'nosuchimage'])).stderr).toMatch(/image nosuchimage is not in the store/);
  });
});

describe('ferry run: isolation', () => {
  it('sees only its own processes: PID 1 is ferry\'s init, the command is PID 2', async () => {
    const out = await f.ok(['run', '--rm', 'base', 'sh', '-c', 'echo $$; cat /proc/1/cmdline | tr "\\0" " "; echo; ls /proc | grep -c "^[0-9]"']);
    const [pid, init, count] = out.trim().split('\n');
    expect(pid).toBe('2');
    expect(init).toBe('ferry-launch run ');
    // init, sh, and the ls/grep of the pipeline: nothing from the host.
    expect(Number(count)).toBeLessThanOrEqual(5);
  });

  it('has its own hostname: the short container ID by default, or --hostname, also in /etc/hostname and /etc/hosts', async () => {
    const out = await f.ok(['run', '--name', 'hn', 'base', 'sh', '-c', 'hostname; cat /etc/hostname']);
    const ps = JSON.parse(await f.ok(['ps', '-a', '--json'])) as Array<{ id: string; name: string; hostname: string }>;
    const id = ps.find((c) => c.name === 'hn')!.id;
    expect(out).toBe(`${id.slice(0, 12)}\n${id.slice(0, 12)}\n`);
    await f.ok(['rm', 'hn']);
    expect(await f.ok(['run', '--rm', '--hostname', 'box', 'base', 'sh', '-c', 'hostname; grep -c box /etc/hosts'])).toBe('box\n1\n');
  });

  it('cannot see host files: its / is the image (plus /proc, /dev, /sys), not the host\'s', async () => {
    const secret = join(f.work, 'host-secret.txt');
    await writeFile(secret, 'secret');
    const out = await f.ok(['run', '--rm', 'base', 'sh', '-c', `test -e ${secret} && echo VISIBLE || echo hidden; ls /; test -e /proc/1/root/${secret} && echo VISIBLE || echo hidden`]);
    expect(out).toBe('hidden\nbin\ndata\ndev\netc\nhome\nproc\nroot\nsys\ntmp\nhidden\n');
  });

  it('has /dev nodes and pts, a read-only /sys, and root without the dangerous capabilities', async () => {
    const out = await f.ok(['run', '--rm', 'base', 'sh', '-c', [
      'ls /dev | tr "\\n" " "; echo',
      'echo x > /dev/null && head -c 5 /dev/zero | wc -c && head -c 7 /dev/urandom | wc -c',
      'touch /sys/x 2>/dev/null && echo sys-writable || echo sys-ro',
      'echo 1 > /proc/sys/kernel/core_pattern 2>/dev/null && echo procsys-writable || echo procsys-ro',
      'mount -t tmpfs none /tmp 2>/dev/null && echo mounted || echo no-mount',
      'readlink /proc/1/exe >/dev/null 2>&1 && echo init-exe-readable || echo init-exe-hidden',
    ].join('; ')]);
    expect(out).toBe([
      'core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero ',
      '5', '7', 'sys-ro', 'procsys-ro', 'no-mount', 'init-exe-hidden', '',
    ].join('\n'));
  });

  it('--network none has only a loopback interface, and it is up', async () => {
    const out = await f.ok(['run', '--rm', '--network', 'none', 'base', 'sh', '-c', 'ls /sys/class/net; cat /sys/class/net/lo/flags']);
    expect(out).toBe('lo\n0x9\n');
  });

  it('--read-only makes the root filesystem read-only', async () => {
    const r = await f.ferry(['run', '--rm', '--read-only', 'base', 'sh', '-c', 'cat /etc/app/app.conf; touch /tmp/x']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('mode=base\n');
    expect(r.stderr).toMatch(/Read-only file system/);
  });

  it('-v binds a host directory read-write, or read-only with :ro; a missing host directory is created', async () => {
    const data = join(f.work, 'vol');
    await mkdir(data);
    await writeFile(join(data, 'in.txt'), 'from host\n');
    const out = await f.ok(['run', '--rm', '-v', `${data}:/mnt/data`, '-v', `${join(f.work, 'created')}:/made`, 'base', 'sh', '-c', 'cat /mnt/data/in.txt; echo from container > /mnt/data/out.txt; ls -d /made']);
    expect(out).toBe('from host\n/made\n');
    expect(await readFile(join(data, 'out.txt'), 'utf8')).toBe('from container\n');
    expect(await readdir(join(f.work, 'created'))).toEqual([]);
    const ro = await f.ferry(['run', '--rm', '-v', `${data}:/mnt/data:ro`, 'base', 'sh', '-c', 'touch /mnt/data/x']);
    expect(ro.code).toBe(1);
    expect(ro.stderr).toMatch(/Read-only file system/);
  });

  it('-t gives the command a pty from the container\'s own devpts', async () => {
    const out = await f.ok(['run', '--rm', '-t', 'base', 'sh', '-c', '[ -t 0 ] && [ -t 1 ] && readlink /proc/self/fd/1; echo $TERM']);
    expect(out).toBe('/dev/pts/0\r\nxterm\r\n');
    const interactive = await f.ferry(['run', '--rm', '-i', 'base', 'sh'], { input: 'echo from stdin; exit 4\n' });
    expect(interactive).toMatchObject({ code: 4, stdout: 'from stdin\n' });
  });

  it('an image of 125 layers fits one overlay mount (short l/ links, relative to the store root)', async () => {
    const layers = Array.from({ length: 124 }, (_, i) => async (r: string): Promise<void> => {
      await mkdir(join(r, 'layers'));
      await writeFile(join(r, 'layers', `n${String(i).padStart(3, '0')}`), `${i}\n`);
      // Each layer also replaces the previous one's /top: only the last must show.
      await writeFile(join(r, 'top'), `${i}\n`);
    });
    await addImage(f, 'many-layers', layers);
    expect(await f.ok(['run', '--rm', 'many-layers', 'sh', '-c', 'ls /layers | wc -l; cat /top /layers/n000 /layers/n123'])).toBe('124\n123\n0\n123\n');
  });

  it('leaves nothing in the host mount table, and --rm leaves no container behind', async () => {
    expect(await mountsMentioning(f.root)).toEqual([]);
    const ps = JSON.parse(await f.ok(['ps', '-a', '--json'])) as unknown[];
    expect(ps).toEqual([]);
  });
});
