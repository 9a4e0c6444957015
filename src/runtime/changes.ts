import type { Stats } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isOpaqueDir, listLayeredDir, lookupChild, lookupLayered, type LayeredEntry } from './layered-fs.js';

/**
 * `ferry diff`: what a container changed, read from its upper layer against the image's layers,
 * as docker diff prints it (moby pkg/archive changes.go): A added, C changed, D deleted.
 * - a whiteout (0:0 character device) of a path the image has: D;
 * - a path absent from the image: A (with everything below it);
 * - a non-directory the image has: C (overlay copied it up to change it);
 * - a directory the image has: C when its mode, owner or mtime differ, or when a child was added
 *   or deleted; an opaque directory (deleted and made again) is C and each image child it no
 *   longer shows is D.
 */
export type ChangeKind = 'A' | 'C' | 'D';

export interface Change {
  kind: ChangeKind;
  /** Absolute path in the container. */
  path: string;
}

function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

function sameDirMeta(a: Stats, b: Stats): boolean {
  return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.mtimeMs === b.mtimeMs;
}

/** Changes of `upper` over the image's layer dirs (top first), sorted by path. */
export async function containerChanges(upper: string, imageLayers: readonly string[]): Promise<Change[]> {
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
  const walk = async (rel: string, lower: LayeredEntry | undefined): Promise<void> => {
    const names = (await readdir(rel === '' ? upper : join(upper, rel))).sort();
    for (const name of names) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const path = `/${childRel}`;
      const st = await lstat(join(upper, childRel));
      const below = lower === undefined ? undefined : await lookupChild(lower.dirLayers, rel, name);
      if (isWhiteout(st)) {
        if (below !== undefined) {
          add(path, 'D');
          parentChanged(path);
        }
        continue;
      }
      if (below === undefined) {
        add(path, 'A');
        parentChanged(path);
        if (st.isDirectory()) await walk(childRel, undefined);
        continue;
      }
      if (!st.isDirectory()) {
        add(path, 'C');
        continue;
      }
      if (!below.stat.isDirectory()) {
        add(path, 'C');
        await walk(childRel, undefined);
        continue;
      }
      if (isOpaqueDir(join(upper, childRel))) {
        add(path, 'C');
        const present = new Set(await readdir(join(upper, childRel)));
        for (const gone of (await listLayeredDir(below, childRel)).keys()) {
          if (!present.has(gone)) add(`${path}/${gone}`, 'D');
        }
        // Children made again are compared with what the image had: they existed before.
        await walk(childRel, below);
        continue;
      }
      if (!sameDirMeta(st, below.stat)) add(path, 'C');
      await walk(childRel, below);
    }
  };
  await walk('', root);
  return [...changes.entries()].map(([path, kind]) => ({ kind, path })).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
