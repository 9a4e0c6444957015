import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { openOciLayout } from '../../src/archive/index.js';
import type { BundleSource } from '../../src/bundle/write-bundle.js';

const execFileAsync = promisify(execFile);

/** Run a real tool; output as text. Fails the test with the tool's stderr. */
export async function run(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ stdout: string; stderr: string }> {
  try {
    return await execFileAsync(cmd, args, { maxBuffer: 256 * 1024 * 1024, ...options });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr ?? ''} ${e.message}`);
  }
}

/** Run a tool that is expected to fail; returns its exit code and output. */
export async function runFailing(cmd: string, args: string[], options: { cwd?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileAsync(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...options });
    return { code: 0, ...r };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export const REGISTRY = 'registry.example:5000/test';

/** Names of the images of the test layout, as the full references the bundle carries. */
export function refOf(name: string): string {
  return `${REGISTRY}/${name}:1`;
}

/** base, app, tools and every platform of multi, from the test layout, as bundle sources. */
export async function layoutSources(layoutDir: string, names = ['base', 'app', 'tools', 'multi']): Promise<BundleSource[]> {
  const sources: BundleSource[] = [];
  for (const name of names) {
    const resolved = await openOciLayout(layoutDir, name, 'all');
    for (const image of resolved.images) sources.push({ ref: refOf(name), image });
  }
  return sources;
}

export async function sha256OfFile(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

export interface TarSpan {
  name: string;
  headerOffset: number;
  dataOffset: number;
  size: number;
}

/** The entries of an uncompressed ustar archive (no PAX: the test bundles need none). */
export function tarEntries(tar: Buffer): TarSpan[] {
  const out: TarSpan[] = [];
  let pos = 0;
  while (pos + 512 <= tar.length) {
    const block = tar.subarray(pos, pos + 512);
    if (block.every((b) => b === 0)) break;
    const nameEnd = block.indexOf(0);
    const name = block.subarray(0, nameEnd === -1 || nameEnd > 100 ? 100 : nameEnd).toString('utf8');
    const size = Number.parseInt(block.subarray(124, 136).toString('ascii').replace(/\0.*$/, '').trim() || '0', 8);
    out.push({ name, headerOffset: pos, dataOffset: pos + 512, size });
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

/** Decompress a bundle with the zstd CLI, let `edit` change the tar, compress it again. */
export async function rewriteBundle(bundle: string, out: string, edit: (tar: Buffer) => void): Promise<void> {
  await run('zstd', ['-q', '-d', '-f', bundle, '-o', `${out}.tar`]);
  const tar = await readFile(`${out}.tar`);
  edit(tar);
  await writeFile(`${out}.tar`, tar);
  await run('zstd', ['-q', '-f', '--rm', `${out}.tar`, '-o', out]);
}

/** Drain a stream, returning its bytes. */
export async function drain(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}
