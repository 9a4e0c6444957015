import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, lstat, mkdir, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
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

const run = promisify(execFile);

export function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** What a layer holds: `populate` fills a staging directory that GNU tar then archives. */
export type Populate = (rootfs: string) => Promise<void>;

/**
 * Import an image `name` = the test `base` image + layers made with GNU tar from what each
 * `populate` puts in its staging directory (for hostile or special images).
 */
export async function addImage(f: RuntimeFixture, name: string, populate: Populate | Populate[], config: Record<string, unknown> = {}): Promise<void> {
  const dir = join(f.work, `layout-${name}`);
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const base = f.layout.images.base!;
  const baseLayer = base.layers[0]!;
  await copyFile(join(f.layout.dir, 'blobs', 'sha256', baseLayer.digest.slice(7)), join(blobs, baseLayer.digest.slice(7)));
  const layers: Array<{ digest: string; size: number }> = [];
  for (const [i, fill] of (Array.isArray(populate) ? populate : [populate]).entries()) {
    const staging = join(f.work, `staging-${name}-${i}`);
    await mkdir(staging);
    await fill(staging);
    const tarPath = join(f.work, `${name}-${i}.tar`);
    await run('tar', ['--sort=name', '--numeric-owner', '--mtime=2024-01-01', '-C', staging, '-cf', tarPath, '.']);
    const tar = await readFile(tarPath);
    const digest = sha256(tar);
    await writeFile(join(blobs, digest.slice(7)), tar);
    layers.push({ digest, size: tar.length });
  }
  const put = async (value: unknown): Promise<{ digest: string; size: number }> => {
    const bytes = Buffer.from(JSON.stringify(value));
    const digest = sha256(bytes);
    await writeFile(join(blobs, digest.slice(7)), bytes);
    return { digest, size: bytes.length };
  };
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const cfg = await put({
    architecture: arch,
    os: 'linux',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], ...config },
    rootfs: { type: 'layers', diff_ids: [baseLayer.diffId, ...layers.map((l) => l.digest)] },
  });
  const manifest = await put({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
    layers: [
      { mediaType: baseLayer.mediaType, digest: baseLayer.digest, size: baseLayer.size },
      ...layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
    ],
  });
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': name } }],
  }));
  await f.ok(['import', `oci:${dir}:${name}`]);
}
