import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry } from '../helpers/ferry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);

/** A store on a small tmpfs: an import that does not fit fails cleanly and the images already there stay intact. */
let work: string;
let small: string;
let layout: TestLayout;

beforeAll(async () => {
  work = await makeTempDir('e2e-nospace');
  layout = await buildTestLayout(join(work, 'layout'), { bigLayerBytes: 40 * 1024 * 1024 });
  small = join(work, 'small');
  await mkdir(small);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', small]);
});

afterAll(async () => {
  await run('umount', [small]);
  await removeDir(work);
});

describe('import into a store that runs out of space', () => {
  it('fails with a clear message, fsck passes, and the images imported before are intact', async () => {
    const root = join(small, 'store');
    const env = { FERRY_ROOT: root };
    const first = await runFerry(['import', `oci:${layout.dir}:base`], { env });
    expect(first.code, first.stderr).toBe(0);

    // As a bundle (declared sizes: refused before writing) and as an OCI layout (the layer is only
    // measured while it is written: ENOSPC midway).
    const bundle = join(work, 'big.tar.zst');
    expect((await runFerry(['export', '-q', '--level', '1', '-o', bundle, `oci:${layout.dir}:big`])).code).toBe(0);
    for (const source of [bundle, `oci:${layout.dir}:big`]) {
      const r = await runFerry(['import', source], { env });
      expect(r.code, source).toBe(1);
      expect(r.stderr).toMatch(/space/i);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      const fsck = await runFerry(['fsck', '--deep'], { env });
      expect(fsck.code, fsck.stdout + fsck.stderr).toBe(0);
      const images = await runFerry(['images', '--json'], { env });
      const names = (JSON.parse(images.stdout) as Array<{ name: string }>).map((i) => i.name);
      expect(names).toEqual(['docker.io/library/base:latest']);
    }
    const out = await runFerry(['run', '--rm', 'base', 'cat', '/etc/hostname'], { env });
    expect(out.code, out.stderr).toBe(0);
  });
});
