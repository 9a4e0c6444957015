import { statfs } from '../io/fs-promises.js';
import { FerryError } from '../errors.js';

/** Bytes free for this user on the filesystem holding `path`. */
export async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

function human(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Left free after an import, so the store's own metadata writes (refs, meta, fsync) never hit ENOSPC. */
export const FREE_SPACE_RESERVE = 16 * 1024 * 1024;

/**
 * Fail early with NO_SPACE when the store's filesystem has less than `needed` bytes free (plus a
 * small reserve), rather than running out halfway through an import.
 */
export async function ensureFreeSpace(path: string, needed: number, what: string): Promise<void> {
  const free = await freeBytes(path);
  if (free < needed + FREE_SPACE_RESERVE) {
    throw new FerryError('NO_SPACE', `${what}: needs about ${human(needed)} plus a ${human(FREE_SPACE_RESERVE)} reserve, but only ${human(free)} is free at ${path}`, {
      hint: 'free space (ferry prune removes unreferenced layers and blobs) or use a store on a larger filesystem with --root',
    });
  }
}

/** Is this error a full disk or quota? */
export function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export function noSpaceError(what: string, path: string, cause: unknown): FerryError {
  return new FerryError('NO_SPACE', `${what}: no space left at ${path}`, {
    cause,
    hint: 'nothing was kept from this step; free space (ferry prune) or use a larger filesystem with --root',
  });
}
