import { chmod, chown, lchown, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeFs } from '../../src/io/native.js';
import { parseNamedVolume } from '../../src/runtime/volumes.js';
import { addImage, setupRuntime, treeState, type RuntimeFixture } from './fixture.js';

/**
 * Volumes: -v NAME:/path (created, filled from the image, reused), the image's VOLUMEs as
 * anonymous volumes, rm -v, `ferry volume ...`; and `ferry inspect CONTAINER`.
 */
let f: RuntimeFixture;

/** treeState without mtimes: GNU tar stamped the layer's, the staging dir has its own. */
function withoutTimes(tree: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, v.split(' ').filter((_, i) => i !== 3).join(' ')]));
}

async function fillData(dir: string): Promise<void> {
  await mkdir(dir, { mode: 0o755 });
  await writeFile(join(dir, 'plain'), 'plain file\n');
  await chown(join(dir, 'plain'), 1000, 1000);
  await chmod(join(dir, 'plain'), 0o640);
  // set-uid after chown: the copy must chown first, or the bit is lost.
  await writeFile(join(dir, 'setuid'), '#!/bin/sh\n');
  await chown(join(dir, 'setuid'), 1000, 2000);
  await chmod(join(dir, 'setuid'), 0o4755);
  await mkdir(join(dir, 'sub'));
  await chown(join(dir, 'sub'), 1234, 5678);
  await chmod(join(dir, 'sub'), 0o750);
  await writeFile(join(dir, 'sub', 'deep'), 'deep\n');
  await chown(join(dir, 'sub', 'deep'), 42, 43);
  // Symlinks pointing out of the directory (and at a host path): copied as links, never followed.
  await symlink('/etc/shadow', join(dir, 'abs-link'));
  await lchown(join(dir, 'abs-link'), 7, 8);
  await symlink('../etc/passwd', join(dir, 'rel-link'));
  await chown(dir, 999, 998);
  await chmod(dir, 0o1770);
}

beforeAll(async () => {
  f = await setupRuntime('rt-vol', ['base']);
  await addImage(f, 'filled', async (root) => fillData(join(root, 'vdata')));
  await addImage(f, 'withvol', async (root) => {
    await mkdir(join(root, 'cache'));
    await writeFile(join(root, 'cache', 'seed'), 'seed\n');
  }, { Volumes: { '/cache': {} } });
});
afterAll(async () => {
  await f.cleanup();
});

describe('named volumes', () => {
  it('a new volume gets exactly the image content at its path (owners, modes, symlinks); a second container sees the first one’s changes', async () => {
    // GNU tar in addImage drops xattrs: put one on the unpacked layer file itself.
    const layer = (await readdir(join(f.root, 'layers'))).map((d) => join(f.root, 'layers', d, 'diff', 'vdata')).find((d) => existsSync(d))!;
    nativeFs().lsetxattr(join(layer, 'plain'), 'user.ferry.test', Buffer.from('kept'));
    await f.ok(['run', '--name', 'one', '-v', 'dbdata:/vdata', 'filled', 'sh', '-c', 'ls /vdata >/dev/null; echo changed > /vdata/new']);
    const data = join(f.root, 'volumes', 'dbdata', '_data');
    const expected = withoutTimes(await treeState(layer));
    expect(expected.plain).toMatch(/user\.ferry\.test=/);
    expect(Object.keys(expected).sort()).toEqual(Object.keys(await treeState(join(f.work, 'staging-filled-0', 'vdata'))).sort());
    const got = withoutTimes(await treeState(data));
    delete got.new;
    expect(got).toEqual(expected);
    // Times come from the image (tar stamped 2024-01-01).
    expect((await treeState(data)).plain!.split(' ')[3]).toBe(String(Date.parse('2024-01-01T00:00:00Z')));

    expect(await f.ok(['run', '--name', 'two', '-v', 'dbdata:/vdata:ro', 'filled', 'sh', '-c', 'cat /vdata/new; stat -c "%u:%g %a" /vdata/sub/deep; echo x > /vdata/nope || echo read-only'])).toBe('changed\n42:43 644\nread-only\n');
    expect(await f.ok(['volume', 'ls', '-q'])).toBe('dbdata\n');
    expect(await f.ok(['volume', 'ls'])).toMatch(/^DRIVER\s+VOLUME NAME\nlocal\s+dbdata\n$/);
    const [inspected] = JSON.parse(await f.ok(['volume', 'inspect', 'dbdata'])) as Array<Record<string, unknown>>;
    expect(inspected).toMatchObject({ Name: 'dbdata', Driver: 'local', Mountpoint: data, Labels: {} });

    // In use: refused, naming the containers; after rm it goes.
    const refused = await f.ferry(['volume', 'rm', 'dbdata']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/volume dbdata: it is in use by container (one|two) /);
    expect(refused.stderr).toMatch(/ferry rm/);
    await f.ok(['rm', '-v', 'one', 'two']);
    expect(existsSync(data)).toBe(true); // rm -v keeps named volumes
    await f.ok(['volume', 'rm', 'dbdata']);
    expect(await f.ok(['volume', 'ls', '-q'])).toBe('');
    expect((await f.ferry(['volume', 'rm', 'dbdata'])).stderr).toMatch(/no such volume: dbdata/);
    expect((await f.ferry(['run', '-v', '-bad:/x', 'base', 'true'])).code).toBe(2);
  });

  it('volume create / prune: prune removes unused anonymous volumes, -a every unused one', async () => {
    // run --rm takes its anonymous volumes along.
    await f.ok(['run', '--rm', 'withvol', 'true']);
    expect(await f.ok(['volume', 'ls', '-q'])).toBe('');
    await f.ok(['volume', 'create', 'spare']);
    // An empty volume made by volume create is filled by the first container on it, as docker does.
    expect(await f.ok(['run', '--rm', '-v', 'spare:/cache', 'withvol', 'cat', '/cache/seed'])).toBe('seed\n');
    await f.ok(['run', '--name', 'holder', 'withvol', 'true']);
    const anon = (await f.ok(['volume', 'ls', '-q'])).split('\n').filter((n) => /^[0-9a-f]{64}$/.test(n));
    expect(anon).toHaveLength(1);
    expect(await f.ok(['volume', 'prune', '-f'])).toBe('Total reclaimed volumes: 0\n'); // still used by holder
    await f.ok(['rm', 'holder']);
    expect(await f.ok(['volume', 'prune'])).toBe(`Deleted Volumes:\n${anon[0]}\n`);
    expect(await f.ok(['volume', 'ls', '-q'])).toBe('spare\n');
    expect(await f.ok(['volume', 'prune', '-a'])).toBe('Deleted Volumes:\nspare\n');
  });
});

describe('copy-up attacks', () => {
  it('a symlink at the volume path pointing at a host directory: the volume gets nothing from the host', async () => {
    const host = join(f.work, 'host-secrets');
    await mkdir(host);
    await writeFile(join(host, 'secret'), 'host only\n');
    await addImage(f, 'leaky', async (root) => {
      await symlink(host, join(root, 'leak'));
      await mkdir(join(root, 'inner'));
      await symlink(host, join(root, 'inner', 'hostlink'));
    });
    await f.ferry(['run', '--name', 'leak', '-v', 'leakvol:/leak', '-v', 'innervol:/inner', 'leaky', 'true']);
    expect(await readdir(join(f.root, 'volumes', 'leakvol', '_data'))).toEqual([]);
    // A link inside the copied tree stays a link; its host target is not copied.
    const inner = await treeState(join(f.root, 'volumes', 'innervol', '_data'));
    expect(Object.keys(inner).sort()).toEqual(['', 'hostlink']);
    expect(inner.hostlink).toContain(`-> ${host}`);
    await f.ferry(['rm', '-f', 'leak']);
    await f.ok(['volume', 'rm', 'leakvol', 'innervol']);
  });

  it('-v parsing: names as docker allows them, host paths still binds', () => {
    expect(parseNamedVolume('db.data_1-x:/var/lib/mysql:ro,nocopy')).toEqual({ name: 'db.data_1-x', noCopy: true, bind: { source: '', destination: '/var/lib/mysql', readOnly: true } });
    expect(parseNamedVolume('/srv:/data')).toBeUndefined();
    expect(parseNamedVolume('./rel:/data')).toBeUndefined();
    expect(() => parseNamedVolume('db:rel')).toThrow(/container path must be absolute/);
    expect(() => parseNamedVolume('db:/x:dev')).toThrow(/device nodes/);
  });
});

describe('anonymous volumes and inspect', () => {
  it('an image VOLUME gets an anonymous volume (filled from the image) that rm -v removes, a named one stays; inspect shows State and Mounts', async () => {
    expect((await f.ferry(['run', '--name', 'av', '-v', 'keep:/keep', 'withvol', 'sh', '-c', 'cat /cache/seed > /keep/x; echo y > /cache/y; exit 3'])).code).toBe(3);
    const [c] = JSON.parse(await f.ok(['inspect', 'av'])) as Array<{
      Id: string; Name: string; Path: string; Args: string[]; Image: string;
      State: Record<string, unknown>; Mounts: Array<Record<string, unknown>>; Config: Record<string, unknown>; HostConfig: Record<string, unknown>;
    }>;
    expect(c!.Name).toBe('/av');
    expect(c!.Path).toBe('sh');
    expect(c!.Image).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(c!.State).toMatchObject({ Status: 'exited', Running: false, Paused: false, ExitCode: 3, OOMKilled: false, Pid: 0, RestartCount: 0 });
    expect(Object.keys(c!.State).sort()).toEqual(expect.arrayContaining(['StartedAt', 'FinishedAt', 'ExitCode', 'Status', 'Running', 'OOMKilled', 'Pid']));
    expect(Date.parse(c!.State.FinishedAt as string)).toBeGreaterThanOrEqual(Date.parse(c!.State.StartedAt as string));
    expect(c!.Config).toMatchObject({ Volumes: { '/cache': {} }, Cmd: ['sh', '-c', expect.any(String)] });
    expect(c!.HostConfig).toMatchObject({ RestartPolicy: { Name: 'no', MaximumRetryCount: 0 }, Privileged: false, ReadonlyRootfs: false });
    const anon = c!.Mounts.find((m) => m.Destination === '/cache');
    expect(anon).toMatchObject({ Type: 'volume', RW: true });
    expect(anon!.Name).toMatch(/^[0-9a-f]{64}$/);
    expect(c!.Mounts.find((m) => m.Destination === '/keep')).toMatchObject({ Type: 'volume', Name: 'keep', Source: join(f.root, 'volumes', 'keep', '_data') });
    expect(JSON.parse(await f.ok(['container', 'inspect', 'av']))).toEqual([c]);

    const anonData = join(f.root, 'volumes', anon!.Name as string, '_data');
    expect((await readdir(anonData)).sort()).toEqual(['seed', 'y']);
    expect((await readdir(join(f.root, 'volumes', 'keep', '_data')))).toEqual(['x']);
    const vinfo = JSON.parse(await f.ok(['volume', 'inspect', anon!.Name as string])) as Array<{ Labels: Record<string, string> }>;
    expect(vinfo[0]!.Labels).toEqual({ 'com.docker.volume.anonymous': '' });

    await f.ok(['rm', '-v', 'av']);
    expect(existsSync(join(f.root, 'volumes', anon!.Name as string))).toBe(false);
    expect(await f.ok(['volume', 'ls', '-q'])).toBe('keep\n');

    // A -v on the VOLUME path replaces the anonymous volume.
    await f.ok(['run', '--name', 'cov', '-v', 'keep:/cache', 'withvol', 'true']);
    expect(await f.ok(['volume', 'ls', '-q'])).toBe('keep\n');
    await f.ok(['rm', 'cov']);
  });

  it('inspect of a running container: Running, Pid, StartedAt; an image name still inspects the image', async () => {
    await f.ok(['run', '-d', '--name', 'live', '--tmpfs', '/scratch', 'base', 'sleep', '30']);
    const [c] = JSON.parse(await f.ok(['inspect', 'live'])) as Array<{ State: Record<string, unknown>; Mounts: Array<Record<string, unknown>> }>;
    expect(c!.State).toMatchObject({ Status: 'running', Running: true, ExitCode: 0, FinishedAt: '0001-01-01T00:00:00Z' });
    expect(c!.State.Pid).toBeGreaterThan(0);
    expect(c!.Mounts).toEqual([expect.objectContaining({ Type: 'tmpfs', Destination: '/scratch', RW: true })]);
    await f.ok(['rm', '-f', 'live']);
    const image = JSON.parse(await f.ok(['inspect', 'base'])) as Record<string, unknown>;
    expect(Array.isArray(image)).toBe(false);
  });
});

describe('--mount', () => {
  it('type=volume (named and anonymous), bind (readonly, the source must exist) and tmpfs map onto -v and --tmpfs, with the same nodev/nosuid rules', async () => {
    const host = join(f.work, 'mount-src');
    await mkdir(host);
    await writeFile(join(host, 'given'), 'from the host\n');
    const opts = (path: string): string => `awk '$5 == "${path}" { print $6 }' /proc/self/mountinfo`;
    const out = await f.ok([
      'run', '--name', 'mnt',
      '--mount', 'type=volume,source=mvol,target=/data',
      '--mount', 'type=volume,target=/anon',
      '--mount', `type=bind,source=${host},target=/host,readonly`,
      '--mount', 'type=tmpfs,target=/scratch,tmpfs-size=1m,tmpfs-mode=700',
      'base', 'sh', '-c',
      `echo kept > /data/f; cat /host/given; echo x > /host/nope 2>/dev/null || echo read-only; ${opts('/data')}; ${opts('/host')}; ${opts('/scratch')}; grep " /scratch " /proc/mounts | grep -o "size=[0-9a-z]*,mode=[0-7]*"`,
    ]);
    expect(out.split('\n').slice(0, 2)).toEqual(['from the host', 'read-only']);
    const [data, bound, scratch, tmpfsData] = out.split('\n').slice(2);
    for (const o of [data, bound, scratch]) expect(o).toMatch(/\bnodev\b/);
    expect(data).toMatch(/nosuid/);
    expect(bound).toMatch(/^ro,/);
    expect(scratch).toMatch(/noexec/);
    expect(tmpfsData).toBe('size=1024k,mode=700');
    const [m] = JSON.parse(await f.ok(['inspect', 'mnt'])) as Array<{ Mounts: Array<{ Type: string; Name?: string; Destination: string; RW: boolean }> }>;
    expect(m!.Mounts.map((x) => [x.Type, x.Destination, x.RW])).toEqual(expect.arrayContaining([
      ['volume', '/data', true], ['volume', '/anon', true], ['bind', '/host', false], ['tmpfs', '/scratch', true],
    ]));
    const anon = m!.Mounts.find((x) => x.Destination === '/anon')!.Name!;
    expect((await f.ok(['volume', 'ls', '-q'])).split('\n')).toEqual(expect.arrayContaining(['mvol', anon]));
    // The named volume outlives the container; the anonymous one goes with rm -v.
    await f.ok(['rm', '-v', 'mnt']);
    expect((await f.ok(['volume', 'ls', '-q'])).split('\n')).not.toContain(anon);
    expect(await f.ok(['run', '--rm', '--mount', 'src=mvol,dst=/d', 'base', 'cat', '/d/f'])).toBe('kept\n');
    await f.ok(['volume', 'rm', 'mvol']);

    for (const bad of [
      'type=bind,source=/no/such/dir,target=/x', // --mount does not create a bind source, as docker
      'type=bind,target=/x',
      'type=volume,source=v',
      'type=tmpfs,source=x,target=/x',
      'type=nfs,target=/x',
      'type=volume,source=v,target=/x,volume-opt=o=addr',
      'type=bind,source=/tmp,target=/x,bind-propagation=shared',
      'type=tmpfs,target=/x,tmpfs-mode=abc',
    ]) {
      const r = await f.ferry(['run', '--rm', '--mount', bad, 'base', 'true']);
      expect(r.code, bad).toBe(2);
    }
    expect(await f.ok(['ps', '-aq'])).toBe('');
  });
});
