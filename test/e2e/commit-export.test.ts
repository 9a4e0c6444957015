import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry } from '../helpers/ferry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * The whole journey of a committed image: a container changes, deletes and adds files; commit
 * makes an image; `ferry export` takes it from the store; another store imports it and runs it.
 */
let work: string;
let layout: TestLayout;

async function ok(root: string, args: string[]): Promise<string> {
  const r = await runFerry(['--root', root, ...args], { env: { FERRY_CACHE_DIR: join(work, 'cache') } });
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  work = await makeTempDir('e2e-commit-export');
  layout = await buildTestLayout(join(work, 'layout'));
});

afterAll(async () => {
  await removeDir(work);
});

describe('commit -> export -> import elsewhere -> run', () => {
  it('carries exactly the container changes, deleted files staying deleted', async () => {
    const here = join(work, 'here');
    const there = join(work, 'there');
    await ok(here, ['import', `oci:${layout.dir}:app`]);
    const change = 'echo changed > /etc/app/app.conf && rm /etc/app/keep.conf && mkdir -p /srv && echo new > /srv/added.txt';
    await ok(here, ['run', '--name', 'c1', '--user', 'root', '--entrypoint', '/bin/sh', 'app', '-c', change]);
    const diff = await ok(here, ['diff', 'c1']);
    expect(diff).toContain('D /etc/app/keep.conf');
    expect(diff).toContain('A /srv/added.txt');
    expect(diff).toContain('C /etc/app/app.conf');
    await ok(here, ['commit', '-m', 'changes', 'c1', 'site/app:2']);
    await ok(here, ['rm', 'c1']);

    const bundle = join(work, 'committed.tar.zst');
    const exported = await runFerry(['--root', here, 'export', '-o', bundle, 'site/app:2'], { env: { FERRY_CACHE_DIR: join(work, 'cache') } });
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stderr).toContain('taken from the local store');

    await ok(there, ['import', bundle]);
    const check = 'cat /etc/app/app.conf; test -e /etc/app/keep.conf && echo keep-present || echo keep-gone; cat /srv/added.txt; test -e /etc/app/removed.conf && echo base-whiteout-broken || echo base-whiteout-ok';
    const out = await ok(there, ['run', '--rm', '--user', 'root', '--entrypoint', '/bin/sh', 'site/app:2', '-c', check]);
    expect(out).toBe('changed\nkeep-gone\nnew\nbase-whiteout-ok\n');
    // The image the container came from is untouched in the first store.
    const original = await ok(here, ['run', '--rm', '--user', 'root', '--entrypoint', '/bin/sh', 'app', '-c', 'cat /etc/app/app.conf; test -e /etc/app/keep.conf && echo keep-present']);
    expect(original).toBe('mode=app\nkeep-present\n');
    expect(await ok(there, ['fsck'])).toMatch(/0 problems/);
  });
});
