import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { FerryError, messageOf } from '../errors.js';

/** fsync a directory so a rename in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A temp name beside `path`, in the same directory so the final rename is atomic. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * Write a whole file atomically: temp file, fsync, rename, fsync the directory. `tmp` may name
 * another place on the same filesystem (the store keeps its temp files in tmp/, swept at start).
 * `beforeRename` runs once the temp file is written, before its fsync and rename: work that must
 * be durable before the file becomes visible (one syncfs can then cover both).
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
  tmp = tempPathFor(path),
  beforeRename?: () => Promise<void>,
): Promise<void> {
  try {
    const handle = await open(tmp, 'wx', mode);
    try {
      await handle.writeFile(data);
      await beforeRename?.();
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
    await syncDir(dirname(path));
  } catch (err) {
    await rm(tmp, { force: true });
    throw new FerryError('IO_ERROR', `write ${path}: ${messageOf(err)}`, { cause: err });
  }
}
