import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry, type FerryResult } from '../helpers/ferry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * `ferry rmi` and containers (issue 4): removing the last name of an image a container uses is
 * refused without -f, naming the image and the container; with -f the name goes and the
 * container keeps working (its layers stay claimed). Removing one of several names is fine.
 */
let work: string;
let layout: TestLayout;
let root: string;

async function ferry(args: string[]): Promise<FerryResult> {
  return runFerry(['--root', root, ...args]);
}

async function ok(args: string[]): Promise<string> {
  const r = await ferry(args);
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

interface PsEntry {
  id: string;
  name: string;
  status: string;
}
const ps = async (): Promise<PsEntry[]> => JSON.parse(await ok(['ps', '-a', '--json'])) as PsEntry[];
const names = async (): Promise<string[]> => (JSON.parse(await ok(['images', '--json'])) as Array<{ name: string }>).map((i) => i.name);

beforeAll(async () => {
  work = await makeTempDir('e2e-rmi');
  layout = await buildTestLayout(join(work, 'layout'));
  root = join(work, 'store');
  await ok(['import', `oci:${layout.dir}:app`]);
  await ok(['import', `oci:${layout.dir}:tools`]);
}, 60_000);

afterAll(async () => {
  // A container left running by a failed test must not outlive it.
  if (root !== undefined) await ferry(['rm', '-f', 'web']);
  await removeDir(work);
});

describe('ferry rmi with containers', () => {
  it('refuses the last name of an image a running container uses, naming both; -f removes it and the container keeps working', async () => {
    await ok(['run', '-d', '--name', 'web', '--user', 'root', '--entrypoint', '/bin/sh', 'app', '-c', 'sleep 120']);
    const web = (await ps()).find((c) => c.name === 'web')!;
    expect(web.status).toBe('running');

    const refused = await ferry(['rmi', 'app']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`^ferry: rmi app: image app:latest is used by container web \\(${web.id.slice(0, 12)}, running\\)`));
    expect(refused.stderr).toMatch(/ferry rm web/);
    expect(refused.stderr).toMatch(/ferry rmi -f/);
    expect(await names()).toContain('docker.io/library/app:latest');
    // By image ID too (one name: the ID rule alone would allow it).
    const byId = await ferry(['rmi', layout.images.app!.configDigest.slice('sha256:'.length, 'sha256:'.length + 12)]);
    expect(byId.code).toBe(1);
    expect(byId.stderr).toMatch(/is used by container web/);

    // One of two names: the image keeps a name, nothing to refuse (as docker).
    await ok(['tag', 'app', 'example.com/app:2']);
    expect(await ok(['rmi', 'example.com/app:2'])).toMatch(/^untagged: example\.com\/app:2/m);

    const forced = await ok(['rmi', '-f', 'app']);
    expect(forced).toMatch(/^untagged: app:latest/m);
    expect(await names()).not.toContain('docker.io/library/app:latest');
    // The container runs on, and can still start processes in its (claimed) layers.
    expect((await ps()).find((c) => c.name === 'web')?.status).toBe('running');
    expect(await ok(['exec', 'web', 'cat', '/etc/app/app.conf'])).toBe('mode=app\n');
    await ok(['rm', '-f', 'web']);
    expect(await ok(['fsck'])).toMatch(/0 problems/);
  }, 60_000);

  it('an exited container blocks too, until it is removed; an image nobody uses goes without -f', async () => {
    await ok(['run', '--name', 'once', 'tools', '/opt/tools/tool.sh', 'hi']);
    const once = (await ps()).find((c) => c.name === 'once')!;
    expect(once.status).toBe('exited');
    const refused = await ferry(['rmi', 'tools']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`rmi tools: image tools:latest is used by container once \\(${once.id.slice(0, 12)}, exited\\)`));
    await ok(['rm', 'once']);
    expect(await ok(['rmi', 'tools'])).toMatch(/^untagged: tools:latest/m);
    expect(await names()).toEqual([]);
  }, 60_000);
});
