import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, openStoreImage } from '../../src/store/index.js';
import { listContainerRecords, loadContainer, type ContainerInfo } from '../../src/runtime/state.js';
import { importImage } from '../../src/verbs/import-image.js';
import { FERRY_BIN, REPO_ROOT, runFerry } from '../helpers/ferry.js';
import { mountsMentioning, setupRuntime, treeState, waitFor, type RuntimeFixture } from './fixture.js';

/**
 * Containers that outlive the ferry command that started them: run -d, logs, exec, stop, kill,
 * rm, ps -a after the process died; copy-on-write, diff and commit.
 */
let f: RuntimeFixture;

interface PsEntry {
  id: string;
  name: string;
  status: string;
  exitCode: number | null;
  pid: number | null;
}

async function ps(): Promise<PsEntry[]> {
  return JSON.parse(await f.ok(['ps', '-a', '--json'])) as PsEntry[];
}

async function statusOf(name: string): Promise<PsEntry | undefined> {
  return (await ps()).find((c) => c.name === name);
}

beforeAll(async () => {
  f = await setupRuntime('rt-life');
});
afterAll(async () => {
  await f.cleanup();
});

describe('detached containers', () => {
  it('run -d, logs, exec, stop (SIGTERM, exit code kept), ps -a, rm; no mount ever reaches the host', async () => {
    const script = 'trap "echo got TERM; exit 3" TERM; echo started; while true; do sleep 0.1; done';
    const id = (await f.ok(['run', '-d', '--name', 'web', 'base', 'sh', '-c', script])).trim();
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    // ferry has exited; the container runs on.
    expect(await statusOf('web')).toMatchObject({ id, status: 'running', exitCode: null });
    expect(await f.ok(['ps', '-q'])).toBe(`${id.slice(0, 12)}\n`);
    expect(await f.ok(['ps'])).toMatch(/^CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+NAMES\n[0-9a-f]{12}\s+base:latest\s+"sh -c .*Up .* web\n$/);
    await waitFor(async () => (await f.ok(['logs', 'web'])) === 'started\n', 5000, 'the log');
    expect(await mountsMentioning(f.root)).toEqual([]);

    // exec: same namespaces (hostname, processes, files), env and working directory.
    const exec = await f.ok(['exec', 'web', 'sh', '-c', 'hostname; pwd; echo $HOSTNAME; ps | grep -c "sleep 0.1\\|while true"; echo hi > /tmp/from-exec']);
    expect(exec.split('\n').slice(0, 3)).toEqual([id.slice(0, 12), '/', id.slice(0, 12)]);
    expect(Number(exec.split('\n')[3])).toBeGreaterThanOrEqual(1);
    expect(await f.ok(['exec', '-u', 'app', '-w', '/tmp', 'web', 'sh', '-c', 'id -u; pwd; cat from-exec'])).toBe('1000\n/tmp\nhi\n');
    expect((await f.ferry(['exec', id.slice(0, 6), 'sh', '-c', 'exit 5'])).code).toBe(5);
    expect((await f.ferry(['exec', 'web', 'nope'])).code).toBe(127);
    expect(await f.ok(['exec', '-t', 'web', 'readlink', '/proc/self/fd/0'])).toMatch(/^\/dev\/pts\/\d+\r\n$/);

    const started = Date.now();
    expect(await f.ok(['stop', 'web'])).toBe('web\n');
    expect(Date.now() - started).toBeLessThan(5000); // it took SIGTERM; no 10 s wait for SIGKILL
    expect(await statusOf('web')).toMatchObject({ status: 'exited', exitCode: 3, pid: null });
    expect(await f.ok(['ps', '-a'])).toMatch(/Exited \(3\)/);
    expect(await f.ok(['logs', 'web'])).toBe('started\ngot TERM\n');
    expect((await f.ferry(['exec', 'web', 'true'])).stderr).toMatch(/it is not running/);

    expect(await f.ok(['rm', 'web'])).toBe('web\n');
    expect(await statusOf('web')).toBeUndefined();
    expect(existsSync(join(f.root, 'containers', id))).toBe(false);
    expect(await mountsMentioning(f.root)).toEqual([]);
  });

  it('a container whose process ended shows exited with its code; logs -f follows to the end', async () => {
    await f.ok(['run', '-d', '--name', 'short', 'base', 'sh', '-c', 'echo one; sleep 0.5; echo two; exit 9']);
    expect(await f.ok(['logs', '-f', 'short'])).toBe('one\ntwo\n');
    await waitFor(async () => (await statusOf('short'))?.status === 'exited', 5000, 'exit');
    expect(await statusOf('short')).toMatchObject({ status: 'exited', exitCode: 9 });
    await f.ok(['rm', 'short']);
  });

  it('run -d --rm: the container is removed once it has exited', async () => {
    await f.ok(['run', '-d', '--rm', '--name', 'gone-soon', 'base', 'sh', '-c', 'sleep 0.2']);
    await waitFor(async () => (await statusOf('gone-soon')) === undefined, 10_000, 'removal');
  });

  it('stop sends SIGKILL after the timeout when SIGTERM is ignored; kill -s delivers a signal', async () => {
    await f.ok(['run', '-d', '--name', 'stubborn', 'base', 'sh', '-c', 'trap "" TERM; trap "echo got USR1" USR1; echo ready; while true; do sleep 0.1; done']);
    await waitFor(async () => (await f.ok(['logs', 'stubborn'])) === 'ready\n', 5000, 'ready');
    expect(await f.ok(['kill', '-s', 'USR1', 'stubborn'])).toBe('stubborn\n');
    await waitFor(async () => (await f.ok(['logs', 'stubborn'])).includes('got USR1'), 5000, 'USR1');
    const started = Date.now();
    await f.ok(['stop', '-t', '1', 'stubborn']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(await statusOf('stubborn')).toMatchObject({ status: 'exited', exitCode: 137 });
    expect((await f.ferry(['kill', 'stubborn'])).stderr).toMatch(/it is not running/);
    await f.ok(['rm', 'stubborn']);
  });

  it('rm refuses a running container without -f; rm -f kills it', async () => {
    await f.ok(['run', '-d', '--name', 'busy', 'base', 'sleep', '100']);
    const r = await f.ferry(['rm', 'busy']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/it is running/);
    expect(await f.ok(['rm', '-f', 'busy'])).toBe('busy\n');
    expect(await statusOf('busy')).toBeUndefined();
    // Names are unique while a container holds them, free again afterwards.
    await f.ok(['run', '--name', 'dup', 'base', 'true']);
    expect((await f.ferry(['run', '--name', 'dup', 'base', 'true'])).stderr).toMatch(/already used/);
    await f.ok(['rm', 'dup']);
  });

  it('signals sent to a foreground ferry reach the container\'s command once', async () => {
    const child = spawn(process.execPath, [FERRY_BIN, '--root', f.root, 'run', '--rm', '--name', 'fg', 'base', 'sh', '-c', `trap 'echo INT; n=$((n+1))' INT; trap 'echo TERM $n; exit 4' TERM; n=0; echo up; while true; do sleep 0.1; done`], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    await waitFor(async () => out === 'up\n', 10_000, 'up');
    child.kill('SIGINT');
    await waitFor(async () => out.includes('INT'), 5000, 'INT');
    child.kill('SIGTERM');
    expect(await exited).toBe(4);
    expect(out).toBe('up\nINT\nTERM 1\n');
  });

  it('a --rm container its killed ferry left is removed by the next start; a stopped one without --rm stays, found by an id prefix', async () => {
    await f.ok(['run', '--name', 'stays', 'base', 'true']);
    // Read as they are: ps would sweep too, and this is about the start's sweep.
    const byName = async (name: string): Promise<ContainerInfo | undefined> => {
      const record = (await listContainerRecords(f.root)).find((r) => r.name === name);
      return record === undefined ? undefined : loadContainer(f.root, record.id);
    };
    const child = spawn(process.execPath, [FERRY_BIN, '--root', f.root, 'run', '--rm', '--name', 'left', 'base', 'sleep', '100'], { cwd: REPO_ROOT, stdio: 'ignore' });
    await waitFor(async () => (await byName('left'))?.status === 'running', 10_000, 'running');
    child.kill('SIGKILL');
    await waitFor(async () => (await byName('left'))?.status === 'exited', 10_000, 'the container to die with ferry');
    const left = (await byName('left'))!.record.id;
    expect(await f.ok(['run', '--rm', 'base', 'true'])).toBe('');
    expect(await loadContainer(f.root, left)).toBeUndefined();
    expect(existsSync(join(f.root, 'containers', left))).toBe(false);
    const stays = (await byName('stays'))!;
    expect(stays.status).toBe('exited');
    expect(await f.ok(['rm', stays.record.id.slice(0, 12)])).toBe(`${stays.record.id.slice(0, 12)}\n`);
    expect(await byName('stays')).toBeUndefined();
    expect((await f.ferry(['rm', stays.record.id.slice(0, 12)])).stderr).toMatch(/no such container/);
  });

  it('a foreground container dies with a killed ferry, and shows exited', async () => {
    const child = spawn(process.execPath, [FERRY_BIN, '--root', f.root, 'run', '--name', 'orphan', 'base', 'sleep', '100'], { cwd: REPO_ROOT, stdio: 'ignore' });
    await waitFor(async () => (await statusOf('orphan'))?.status === 'running', 10_000, 'running');
    child.kill('SIGKILL');
    await waitFor(async () => (await statusOf('orphan'))?.status === 'exited', 10_000, 'the container to die with ferry');
    const after = await statusOf('orphan');
    expect(after, JSON.stringify(after)).toMatchObject({ status: 'exited', exitCode: 137 });
    expect(await mountsMentioning(f.root)).toEqual([]);
    await f.ok(['rm', 'orphan']);
  });
});

describe('containers and the store', () => {
  it('a container outlives its image: rmi + prune keep its layers; exec, diff and commit still work; rm + prune free them', async () => {
    const before = await readdir(join(f.root, 'layers'));
    await f.ok(['import', `oci:${f.layout.dir}:tools`]);
    await f.ok(['run', '-d', '--name', 'keeper', 'tools', 'sh', '-c', 'echo kept > /tmp/k; sleep 100']);
    // rmi refuses while a container uses the image; -f removes the name and the container keeps its layers.
    expect((await f.ferry(['rmi', 'tools'])).code).toBe(1);
    await f.ok(['rmi', '-f', 'tools']);
    await f.ok(['prune']);
    expect(await f.ok(['exec', 'keeper', 'cat', '/etc/tools.conf'])).toBe('tools=1\n');
    await waitFor(async () => (await f.ok(['diff', 'keeper'])).includes('A /tmp/k'), 5000, 'the change');
    await f.ok(['commit', 'keeper', 'kept:1']);
    await f.ok(['rm', '-f', 'keeper']);
    expect(await f.ok(['run', '--rm', 'kept:1', 'cat', '/tmp/k', '/etc/tools.conf'])).toBe('kept\ntools=1\n');
    await f.ok(['rmi', 'kept:1']);
    await f.ok(['prune']);
    expect((await readdir(join(f.root, 'layers'))).sort()).toEqual(before.sort());
  });
});

describe('copy-on-write, diff and commit', () => {
  const changes = [
    'echo changed >> /etc/app/app.conf', // change a file of the top layer
    'rm /etc/app/keep.conf', // delete a file of the base layer
    'rm -r /data/old', // delete a directory (with the top layer's opaque marker)
    'echo added > /opt/app/added.txt', // add a file
    'rm /opt/app/a-original.txt', // delete one name of a hardlinked pair
    'chmod 700 /opt/app/run.sh', // metadata-only change
    'mkdir -p /srv/new/deep && echo deep > /srv/new/deep/file', // new directories
  ].join(' && ');

  it('changes stay in the container: the image layers are bit-identical, the next container is clean', async () => {
    const layersBefore = await treeState(join(f.root, 'layers'));
    await f.ok(['run', '--name', 'changer', '-u', '0', '--entrypoint', '/bin/sh', 'app', '-c', changes]);
    expect(await treeState(join(f.root, 'layers'))).toEqual(layersBefore);
    const clean = await f.ok(['run', '--rm', '-u', '0', '--entrypoint', '/bin/sh', 'app', '-c', 'cat /etc/app/app.conf /etc/app/keep.conf /data/old/new.txt /opt/app/a-original.txt; ls /opt/app; stat -c %a /opt/app/run.sh; ls /srv 2>&1; true']);
    expect(clean).toBe('mode=app\nkeep=yes\nnew in app\noriginal\na-original.txt\nb-hardlink.txt\ncurrent\nrun.sh\nsuid-tool\n755\nls: /srv: No such file or directory\n');
  });

  it('diff lists the changes as docker does (A/C/D)', async () => {
    expect(await f.ok(['diff', 'changer'])).toBe([
      'C /data',
      'D /data/old',
      'C /etc/app',
      'C /etc/app/app.conf',
      'D /etc/app/keep.conf',
      'C /opt/app',
      'D /opt/app/a-original.txt',
      'A /opt/app/added.txt',
      'C /opt/app/run.sh',
      'A /srv',
      'A /srv/new',
      'A /srv/new/deep',
      'A /srv/new/deep/file',
      '',
    ].join('\n'));
  });

  it('commit makes an image with exactly those changes; deleted files stay deleted, also in another store', async () => {
    const digest = (await f.ok(['commit', '-c', 'ENTRYPOINT []', '-c', 'CMD ["cat", "/opt/app/added.txt"]', '-m', 'test commit', 'changer', 'committed:1'])).trim();
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await f.ok(['images'])).toMatch(/committed:1\s+linux\/\w+\s+sha256:[0-9a-f]{12}/);
    // As docker commit: the container's config (its -u 0, the image's workdir and env), then the changes.
    expect(await f.ok(['run', '--rm', 'committed:1', 'sh', '-c', 'cat /opt/app/added.txt; id -u; pwd; echo $APP_MODE'])).toBe('added\n0\n/opt/app\ntest\n');
    expect(await f.ok(['run', '--rm', 'committed:1'])).toBe('added\n');
    const check = ['-c', 'cat /etc/app/app.conf /opt/app/added.txt /opt/app/b-hardlink.txt /srv/new/deep/file; stat -c %a /opt/app/run.sh; ls /data; ls /opt/app; ls /etc/app'];
    const expected = 'mode=app\nchanged\nadded\noriginal\ndeep\n700\nadded.txt\nb-hardlink.txt\ncurrent\nrun.sh\nsuid-tool\napp.conf\n';
    expect(await f.ok(['run', '--rm', '-u', '0', '--entrypoint', '/bin/sh', 'committed:1', ...check])).toBe(expected);
    // Nothing of the commit's own making shows as a change of a container of the new image.
    await f.ok(['run', '--name', 'fresh', 'committed:1']);
    expect(await f.ok(['diff', 'fresh'])).toBe('');
    await f.ok(['rm', 'fresh']);

    // The same upper layer gives the same layer bytes (a deterministic tar).
    await f.ok(['commit', 'changer', 'committed:2']);
    const store = await openStore({ root: f.root });
    const one = await openStoreImage(store, 'committed:1');
    const two = await openStoreImage(store, 'committed:2');
    expect(two.digest).not.toBe(digest);
    expect(one.config.rootfs.diff_ids.at(-1)).toBe(two.config.rootfs.diff_ids.at(-1));
    expect(one.manifest.layers.at(-1)).toEqual(two.manifest.layers.at(-1));
    expect(one.config.history?.at(-1)).toMatchObject({ comment: 'test commit' });
    expect(one.config.config).toMatchObject({ Entrypoint: [], Cmd: ['cat', '/opt/app/added.txt'], User: '0', WorkingDir: '/opt/app' });
    expect(one.config.rootfs.diff_ids.length).toBe(3);
    expect(one.config.history?.length).toBe(4);

    // Carried to another store as any image (the store is a location), it runs the same there.
    const otherRoot = join(f.work, 'other-root');
    const other = await openStore({ root: otherRoot });
    await importImage(other, one);
    const there = await runFerry(['--root', otherRoot, 'run', '--rm', '-u', '0', '--entrypoint', '/bin/sh', 'committed:1', ...check]);
    expect(there).toMatchObject({ code: 0, stdout: expected });
    await f.ok(['rm', 'changer']);
  });
});

