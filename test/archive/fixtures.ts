import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { Header } from 'tar';
import { expect } from 'vitest';
import { isFerryError, type ErrorCode } from '../../src/errors.js';
import type { Image } from '../../src/oci/image.js';

export const run = promisify(execFile);

export async function sh(command: string, cwd?: string): Promise<string> {
  try {
    const { stdout } = await run('sh', ['-c', command], { cwd, maxBuffer: 64 << 20 });
    return stdout;
  } catch (err) {
    throw new Error(`${command}: ${(err as { stderr?: string }).stderr ?? String(err)}`, { cause: err });
  }
}

export async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

export function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Read every layer's tar (verifying its diffId) and blob; returns the diffIds. */
export async function readAllLayers(image: Image): Promise<string[]> {
  const out: string[] = [];
  for (const layer of image.layers) {
    const tar = await collect(await layer.tar());
    expect(sha256(tar)).toBe(layer.diffId);
    const blob = await collect(await layer.blob());
    expect(sha256(blob)).toBe(layer.descriptor.digest);
    expect(blob.length).toBe(layer.descriptor.size);
    out.push(layer.diffId);
  }
  return out;
}

/** Await a promise that must fail with a FerryError of `code`; returns its message. */
export async function failsWith(p: Promise<unknown>, code: ErrorCode): Promise<string> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  if (err === undefined) throw new Error(`expected ${code}, but it succeeded`);
  if (!isFerryError(err, code)) throw new Error(`expected FerryError ${code}, got: ${String(err)}`, { cause: err });
  return err.message;
}

export interface RawEntry {
  name: string;
  type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'ExtendedHeader';
  data?: Buffer | string;
  linkpath?: string;
}

/**
 * A tar built header by header, names written exactly as given (node-tar's Header does no
 * sanitising): how attacks on a reader are built.
 */
export function tarOf(entries: RawEntry[], { end = true }: { end?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
    const header = new Header({
      path: e.name,
      type: e.type ?? 'File',
      size: data.length,
      mode: e.type === 'Directory' ? 0o755 : 0o644,
      mtime: new Date(0),
      linkpath: e.linkpath ?? '',
      uid: 0,
      gid: 0,
    });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    if (header.needPax) throw new Error(`tarOf: ${e.name} needs a pax header`);
    parts.push(block, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  if (end) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
