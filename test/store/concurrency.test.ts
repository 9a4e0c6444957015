import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsck, openStore } from '../../src/store/index.js';
import { REPO_ROOT } from '../helpers/ferry.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/** Two ferry processes importing into one store at the same time both succeed; the store stays sound. */
const CHILD = resolve(REPO_ROOT, 'test/store/fixtures/import-child.ts');
const VITE_NODE = resolve(REPO_ROOT, 'node_modules/vite-node/vite-node.mjs');
let base: string;

interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function child(root: string, which: string): Promise<ChildResult> {
  return new Promise((resolvePromise, reject) => {
    const p = spawn(process.execPath, [VITE_NODE, CHILD, root, which], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  base = await makeTempDir('concurrency');
});
afterAll(async () => {
  await removeDir(base);
});

describe('concurrent imports', () => {
  it('two processes importing images that share a layer both succeed', async () => {
    const root = join(base, 'shared-layer');
    const [a, b] = await Promise.all([child(root, 'a'), child(root, 'b')]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const store = await openStore({ root });
    expect((await store.refs.list()).map((r) => r.name).sort()).toEqual(['docker.io/concurrent/a:1', 'docker.io/concurrent/b:1']);
    expect(await store.layers.list()).toHaveLength(3);
    expect((await fsck(store)).problems).toEqual([]);
  });

  it('two processes importing the same image at once both succeed; the layer exists once', async () => {
    const root = join(base, 'same-image');
    const [a, b] = await Promise.all([child(root, 'x'), child(root, 'x')]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const sa = JSON.parse(a.stdout) as { layersUnpacked: number; layersSkipped: number };
    const sb = JSON.parse(b.stdout) as { layersUnpacked: number; layersSkipped: number };
    // Each layer was committed by exactly one of them.
    expect(sa.layersUnpacked + sb.layersUnpacked).toBe(2);
    expect(sa.layersSkipped + sb.layersSkipped).toBe(2);
    const store = await openStore({ root });
    expect(await store.refs.list()).toHaveLength(1);
    expect((await fsck(store)).problems).toEqual([]);
  });
});

describe('crash safety', () => {
  it('an import killed midway leaves no ref and nothing fsck objects to once tmp/ is swept', async () => {
    const root = join(base, 'killed');
    const p = spawn(process.execPath, [VITE_NODE, CHILD, root, 'big'], { cwd: REPO_ROOT, stdio: 'ignore' });
    // Kill it while it unpacks: once a staging dir exists in tmp/.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const entries = await readdir(join(root, 'tmp')).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return [] as string[];
        throw err;
      });
      if (entries.some((e) => e.endsWith('-layer'))) break;
      if (Date.now() > deadline) throw new Error('the child never started unpacking');
      await new Promise((r) => setTimeout(r, 20));
    }
    p.kill('SIGKILL');
    await new Promise((r) => p.on('close', r));
    const before = await openStore({ root, readOnly: true });
    expect((await fsck(before)).problems.map((x) => x.kind)).toContain('tmp-leftover');
    const store = await openStore({ root });
    expect(await store.refs.list()).toEqual([]);
    expect((await fsck(store)).problems).toEqual([]);
  });
});
