import type { Stats } from 'node:fs';
import { FerryError } from '../errors.js';
import { errnoCode, errnoReason, fileTypeOf, nativeFs, type FdStat } from '../io/native.js';
import { isOpaqueDirFd, listDirFd, MAX_UPPER_DEPTH } from './layer-tar.js';
import { listLayeredDir, lookupChild, lookupLayered, type LayeredEntry } from './layered-fs.js';

/**
 * `ferry diff`: what a container changed, read from its upper layer against the image's layers,
 * as docker diff prints it (moby pkg/archive changes.go): A added, C changed, D deleted.
 * - a whiteout (0:0 character device) of a path the image has: D;
 * - a path absent from the image: A (with everything below it);
 * - a non-directory the image has: C (overlay copied it up to change it);
 * - a directory the image has: C when its mode, owner or mtime differ, or when a child was added
 *   or deleted; an opaque directory (deleted and made again) is C and each image child it no
 *   longer shows is D.
 * The upper layer of a running container changes while we read it: it is walked from directory
 * fds as commit walks it (layer-tar.ts), so no symlink the container plants is followed and
 * messages name paths in the container, never on the host.
 */
export type ChangeKind = 'A' | 'C' | 'D';

export interface Change {
  kind: ChangeKind;
  /** Absolute path in the container. */
  path: string;
}

export interface ContainerChangesOptions {
  /** For messages ("diff of container web"); default "diff". */
  what?: string;
}

const ATTEMPTS = 3;

function isWhiteout(st: FdStat): boolean {
  return fileTypeOf(st) === 'char' && st.rdev === 0n;
}

/** Node's Stats.mtimeMs, computed the same way (sec * 1e3 + nsec / 1e6). */
function mtimeMs(st: FdStat): number {
  return st.mtimeSec * 1e3 + st.mtimeNsec / 1e6;
}

function sameDirMeta(a: FdStat, b: Stats): boolean {
  return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && mtimeMs(a) === b.mtimeMs;
}

/**
 * `name` in the upper directory fd as it is now; a directory comes with its fd (the caller
 * closes it). A directory replaced between the stat and the open is looked at again; gone (or
 * still being replaced): undefined.
 */
function upperEntry(dirFd: number, name: Buffer, path: string, what: string): { st: FdStat; fd?: number } | undefined {
  const native = nativeFs();
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    let st: FdStat;
    try {
      st = native.fstatat(dirFd, name);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw new FerryError('IO_ERROR', `${what}: stat ${path}: ${errnoReason(err)}`, { cause: err });
    }
    if (fileTypeOf(st) !== 'dir') return { st };
    let fd: number;
    try {
      fd = native.openDirAt(dirFd, name);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') continue;
      throw new FerryError('IO_ERROR', `${what}: open ${path}: ${errnoReason(err)}`, { cause: err });
    }
    let ok = false;
    try {
      const now = native.fstat(fd);
      ok = true;
      return { st: now, fd };
    } finally {
      if (!ok) native.close(fd);
    }
  }
  return undefined;
}

/** Changes of `upper` over the image's layer dirs (top first), sorted by path. */
export async function containerChanges(upper: string, imageLayers: readonly string[], options: ContainerChangesOptions = {}): Promise<Change[]> {
  const what = options.what ?? 'diff';
  const native = nativeFs();
  const changes = new Map<string, ChangeKind>();
  const add = (path: string, kind: ChangeKind): void => {
    if (!changes.has(path)) changes.set(path, kind);
  };
  const parentChanged = (path: string): void => {
    const parent = path.slice(0, path.lastIndexOf('/'));
    if (parent !== '') add(parent, 'C');
  };
  const root = await lookupLayered(imageLayers, '/', false);

  /** `lower`: the image's merged directory at `rel`, or undefined when the image has none there. */
  const walk = async (dirFd: number, rel: string, lower: LayeredEntry | undefined, depth: number): Promise<void> => {
    if (depth > MAX_UPPER_DEPTH) throw new FerryError('UNSUPPORTED', `${what}: /${rel} is nested more than ${MAX_UPPER_DEPTH} directories deep`);
    for (const raw of listDirFd(dirFd, Buffer.from(rel), what)) {
      const name = raw.toString();
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const path = `/${childRel}`;
      const entry = upperEntry(dirFd, raw, path, what);
      if (entry === undefined) continue;
      try {
        await visit(entry, rel, name, childRel, path, lower, depth);
      } finally {
        if (entry.fd !== undefined) native.close(entry.fd);
      }
    }
  };
  const visit = async (
    { st, fd }: { st: FdStat; fd?: number },
    rel: string,
    name: string,
    childRel: string,
    path: string,
    lower: LayeredEntry | undefined,
    depth: number,
  ): Promise<void> => {
    const below = lower === undefined ? undefined : await lookupChild(lower.dirLayers, rel, name);
    if (isWhiteout(st)) {
      if (below !== undefined) {
        add(path, 'D');
        parentChanged(path);
      }
      return;
    }
    if (below === undefined) {
      add(path, 'A');
      parentChanged(path);
      if (fd !== undefined) await walk(fd, childRel, undefined, depth + 1);
      return;
    }
    if (fd === undefined) {
      add(path, 'C');
      return;
    }
    if (!below.stat.isDirectory()) {
      add(path, 'C');
      await walk(fd, childRel, undefined, depth + 1);
      return;
    }
    if (isOpaqueDirFd(fd, Buffer.from(childRel), what)) {
      add(path, 'C');
      const present = new Set(listDirFd(fd, Buffer.from(childRel), what).map((n) => n.toString()));
      for (const gone of (await listLayeredDir(below, childRel)).keys()) {
        if (!present.has(gone)) add(`${path}/${gone}`, 'D');
      }
      // Children made again are compared with what the image had: they existed before.
      await walk(fd, childRel, below, depth + 1);
      return;
    }
    if (!sameDirMeta(st, below.stat)) add(path, 'C');
    await walk(fd, childRel, below, depth + 1);
  };

  let rootFd: number;
  try {
    rootFd = native.openDir(upper);
  } catch (err) {
    throw new FerryError('IO_ERROR', `${what}: open the upper layer: ${errnoReason(err)}`, { cause: err });
  }
  try {
    await walk(rootFd, '', root, 0);
  } finally {
    native.close(rootFd);
  }
  return [...changes.entries()].map(([path, kind]) => ({ kind, path })).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
