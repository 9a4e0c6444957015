import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { runFerry, type FerryResult } from '../helpers/ferry.js';
import { fileTree } from '../helpers/tree.js';

const run = promisify(execFile);

/** Write a build context: path -> content (a string, or a Buffer for binary files). */
export async function writeContext(dir: string, files: Record<string, string | Buffer>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), content);
  }
}

export async function ferry(root: string, args: string[], env: Record<string, string> = {}): Promise<FerryResult> {
  return runFerry(['--root', root, ...args], { env });
}

export async function ferryOk(root: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await ferry(root, args, env);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

/** The last line ferry build prints: the image ID. */
export function imageId(stdout: string): string {
  return stdout.trim().split('\n').at(-1)!;
}

/** buildah with its own vfs store under `dir` (chroot isolation: no OCI runtime needed). */
export async function buildah(dir: string, args: string[]): Promise<string> {
  const { stdout } = await run('buildah', ['--storage-driver', 'vfs', '--root', join(dir, 'root'), '--runroot', join(dir, 'run'), ...args], { maxBuffer: 64 << 20 });
  return stdout;
}

export interface Unpacked {
  tree: Record<string, string>;
  /** The image config's `config` as written (HEALTHCHECK included). */
  config: Record<string, unknown>;
}

/**
 * A docker-archive (what `ferry save` and `buildah push docker-archive:` write) as a filesystem
 * (skopeo to an OCI layout, then umoci unpack, owners kept) and its raw config.
 */
export async function unpackArchive(archive: string, work: string): Promise<Unpacked> {
  await mkdir(work, { recursive: true });
  const layout = join(work, 'oci');
  await run('skopeo', ['copy', '-q', `docker-archive:${archive}`, `oci:${layout}:img`]);
  await run('umoci', ['unpack', '--image', `${layout}:img`, join(work, 'bundle')]);
  const listing = (await run('tar', ['-xOf', archive, 'manifest.json'])).stdout;
  const manifest = JSON.parse(listing) as Array<{ Config: string }>;
  const configText = (await run('tar', ['-xOf', archive, manifest[0]!.Config], { maxBuffer: 16 << 20 })).stdout;
  const config = (JSON.parse(configText) as { config?: Record<string, unknown> }).config ?? {};
  return { tree: await fileTree(join(work, 'bundle', 'rootfs')), config };
}

/**
 * What buildah puts into every image that ferry (like BuildKit) leaves out: the mount points of
 * its RUN containers (/etc/hosts, /etc/resolv.conf as empty files, /dev, /proc, /sys, /run as
 * empty directories) and its version label. buildah's own conformance tests list these too.
 */
export function withoutBuildahMounts(tree: Record<string, string>, base: Record<string, string>): Record<string, string> {
  const out = { ...tree };
  for (const p of ['etc/hosts', 'etc/resolv.conf', 'dev', 'proc', 'sys', 'run']) {
    if (base[p] === undefined) delete out[p];
  }
  return out;
}

export const COMPARED_CONFIG = ['Env', 'Entrypoint', 'Cmd', 'WorkingDir', 'User', 'ExposedPorts', 'Volumes', 'Labels', 'StopSignal', 'Healthcheck', 'Shell', 'OnBuild'] as const;

export function comparedConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of COMPARED_CONFIG) {
    let v = config[k];
    if (k === 'Labels' && v !== undefined) {
      const labels = { ...(v as Record<string, string>) };
      delete labels['io.buildah.version'];
      v = Object.keys(labels).length > 0 ? labels : undefined;
    }
    if (v === null || (Array.isArray(v) && v.length === 0) || v === '' || (typeof v === 'object' && Object.keys(v).length === 0)) v = undefined;
    if (v !== undefined) out[k] = v;
  }
  return out;
}

export async function readText(path: string): Promise<string> {
  return readFile(path, 'utf8');
}
