import { constants as fsConstants, lstatSync, readlinkSync, type Stats } from 'node:fs';
import { open, readdir } from '../io/fs-promises.js';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import { nativeFs } from '../io/native.js';

/**
 * Read an image's files from its layer directories (overlay form, top layer first) without
 * mounting anything: what the merged overlay would show. Used for /etc/passwd and /etc/group
 * (user names are never looked up on the host), for `diff` (did a path exist below the container's
 * upper layer?) and for the init layer's directory metadata.
 *
 * The overlay rules: a 0:0 character device is a whiteout (the name is deleted below it); a
 * directory marked opaque (trusted.overlay.opaque=y, or user.overlay.opaque for rootless stores)
 * hides the same directory in lower layers; a non-directory hides everything below it. Symlinks
 * are resolved inside the image root ("/.." stays "/"), never on the host.
 */
export interface LayeredEntry {
  /** The entry's path on the host, in the top-most layer holding it. */
  hostPath: string;
  stat: Stats;
  /** For directories: the layers (top first) whose copy of it is merged. */
  dirLayers: string[];
}

const MAX_SYMLINKS = 40;

function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** Synchronous, as the link reads below: a start probes a few paths in every layer, and each async call is a thread-pool round trip. */
function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** Is this layer's copy of a directory opaque (hides the directory in lower layers)? */
export function isOpaqueDir(path: string): boolean {
  const native = nativeFs();
  for (const name of ['trusted.overlay.opaque', 'user.overlay.opaque']) {
    const v = native.lgetxattr(path, name);
    if (v !== null && v.toString() === 'y') return true;
  }
  return false;
}

/**
 * Look up `name` in a merged directory made of `dirLayers` at `rel` (relative path in each
 * layer). undefined when absent or whited out.
 */
export async function lookupChild(dirLayers: readonly string[], rel: string, name: string): Promise<LayeredEntry | undefined> {
  const childRel = rel === '' ? name : `${rel}/${name}`;
  let found: LayeredEntry | undefined;
  for (const layer of dirLayers) {
    const hostPath = join(layer, childRel);
    const st = lstatOrUndefined(hostPath);
    if (st === undefined) continue;
    if (found === undefined) {
      if (isWhiteout(st)) return undefined;
      found = { hostPath, stat: st, dirLayers: [] };
      if (!st.isDirectory()) return found;
    } else if (!st.isDirectory()) {
      break; // a file or whiteout below the directory ends the merge
    }
    found.dirLayers.push(layer);
    if (isOpaqueDir(hostPath)) break;
  }
  return found;
}

function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}

/**
 * The entry at `path` (absolute, in the image's view). Symlinks in the middle are followed inside
 * the root; the last component is followed only when `follow` is set.
 */
export async function lookupLayered(layers: readonly string[], path: string, follow = true): Promise<LayeredEntry | undefined> {
  const top = layers[0];
  if (top === undefined) return undefined;
  const root: LayeredEntry = { hostPath: top, stat: lstatSync(top), dirLayers: [...layers] };
  let todo = components(path);
  // dirs[i] is the merged directory of resolved[0..i): every resolved component is a directory.
  let dirs: LayeredEntry[] = [root];
  let resolved: string[] = [];
  let hops = 0;
  while (todo.length > 0) {
    const c = todo.shift()!;
    if (c === '..') {
      if (resolved.length > 0) {
        resolved.pop();
        dirs.pop();
      }
      continue;
    }
    const entry = await lookupChild(dirs[dirs.length - 1]!.dirLayers, resolved.join('/'), c);
    if (entry === undefined) return undefined;
    if (entry.stat.isSymbolicLink() && (todo.length > 0 || follow)) {
      if (++hops > MAX_SYMLINKS) {
        throw new FerryError('UNSAFE_PATH', `${path}: too many levels of symbolic links in the image`);
      }
      const target = readlinkSync(entry.hostPath);
      if (target.startsWith('/')) {
        resolved = [];
        dirs = [root];
      }
      todo = [...components(target), ...todo];
      continue;
    }
    if (todo.length === 0) return entry;
    if (!entry.stat.isDirectory()) return undefined;
    dirs.push(entry);
    resolved.push(c);
  }
  return dirs[dirs.length - 1];
}

/** A regular file's bytes through the layers, or undefined when absent; refuses files over `maxBytes`. */
export async function readLayeredFile(layers: readonly string[], path: string, maxBytes = 4 << 20): Promise<Buffer | undefined> {
  const entry = await lookupLayered(layers, path, true);
  if (entry === undefined || !entry.stat.isFile()) return undefined;
  if (entry.stat.size > maxBytes) {
    throw new FerryError('UNSUPPORTED', `${path} in the image is ${entry.stat.size} bytes, over the ${maxBytes}-byte limit for reading it`);
  }
  // O_NOFOLLOW: the layer file was just lstat'ed as a regular file; never follow a swapped link.
  const handle = await open(entry.hostPath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW).catch((err: unknown) => {
    throw new FerryError('IO_ERROR', `read ${path} from the image (${entry.hostPath}): ${(err as Error).message}`, { cause: err });
  });
  try {
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

/** The merged listing of a directory entry: name -> entry (whiteouts removed). */
export async function listLayeredDir(dir: LayeredEntry, rel: string): Promise<Map<string, LayeredEntry>> {
  const out = new Map<string, LayeredEntry>();
  const seen = new Set<string>();
  for (const layer of dir.dirLayers) {
    let names: string[];
    try {
      names = await readdir(rel === '' ? layer : join(layer, rel));
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') continue;
      throw err;
    }
    for (const name of names) {
      if (seen.has(name)) continue;
      seen.add(name);
      const entry = await lookupChild(dir.dirLayers, rel, name);
      if (entry !== undefined) out.set(name, entry);
    }
  }
  return out;
}
