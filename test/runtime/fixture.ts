import { createHash } from 'node:crypto';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { nativeFs } from '../../src/io/native.js';
import { runFerry, type FerryResult, type RunFerryOptions } from '../helpers/ferry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * A store with the busybox test images imported through `ferry import`, and `ferry` bound to it.
 * Runtime tests run as root (as CI does): they create namespaces and mount overlays for real.
 */
export interface RuntimeFixture {
  work: string;
  root: string;
  layout: TestLayout;
  ferry(args: string[], options?: RunFerryOptions): Promise<FerryResult>;
  /** ferry that must exit 0; its stdout. */
  ok(args: string[], options?: RunFerryOptions): Promise<string>;
  cleanup(): Promise<void>;
}

export async function setupRuntime(prefix: string, images: string[] = ['app', 'base']): Promise<RuntimeFixture> {
  const work = await makeTempDir(prefix);
  const layout = await buildTestLayout(join(work, 'layout'));
  const root = join(work, 'root');
  const ferry = (args: string[], options?: RunFerryOptions): Promise<FerryResult> => runFerry(['--root', root, ...args], options);
  const ok = async (args: string[], options?: RunFerryOptions): Promise<string> => {
    const r = await ferry(args, options);
    expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
    return r.stdout;
  };
  for (const image of images) await ok(['import', `oci:${layout.dir}:${image}`]);
  return {
    work,
    root,
    layout,
    ferry,
    ok,
    async cleanup() {
      const ids = (await ferry(['ps', '-aq'])).stdout.split('\n').filter((l) => l !== '');
      if (ids.length > 0) await ferry(['rm', '-f', ...ids]);
      await removeDir(work);
    },
  };
}

/** Lines of the host's (this process's) mount table that mention `path`. */
export async function mountsMentioning(path: string): Promise<string[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(path));
}

/** Every entry under `dir` with type, mode, owner, size, mtime, content hash, link target, device and xattrs. */
export async function treeState(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const native = nativeFs();
  const walk = async (rel: string): Promise<void> => {
    const path = rel === '' ? dir : join(dir, rel);
    const st = await lstat(path);
    let detail = '';
    if (st.isFile()) detail = createHash('sha256').update(await readFile(path)).digest('hex');
    else if (st.isSymbolicLink()) detail = `-> ${await readlink(path)}`;
    else if (st.isCharacterDevice() || st.isBlockDevice()) detail = `dev ${st.rdev}`;
    const xattrs = native.llistxattr(path).sort().map((n) => `${n}=${native.lgetxattr(path, n)?.toString('hex') ?? ''}`).join(',');
    out[rel] = `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeMs} ${st.nlink} ${detail} ${xattrs}`;
    if (st.isDirectory()) for (const name of (await readdir(path)).sort()) await walk(rel === '' ? name : `${rel}/${name}`);
  };
  await walk('');
  return out;
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Poll `fn` until it returns true or `timeoutMs` passes. */
export async function waitFor(fn: () => Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
