import { constants, createReadStream, createWriteStream, openSync, type Stats } from 'node:fs';
import { chmod, lchown, lstat, mkdir, readdir, readlink, realpath, symlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import { listLayeredDir, lookupLayered, type LayeredEntry } from '../runtime/layered-fs.js';
import { hasGlob, IgnoreMatcher, matchComponent, PatternError } from './dockerignore.js';

/**
 * Where COPY and ADD read from: the build context (a host directory, filtered by
 * .dockerignore) or another stage's or image's files (store layer directories, read as the
 * merged overlay would show them, nothing mounted). A context is hostile input: a path or a
 * symlink that leads out of it is refused, never followed; files are read only from lstat'ed
 * regular files inside the root.
 */
export interface SourceNode {
  /** Path relative to the tree's root, '' for the root (symlinks resolved). */
  rel: string;
  /** The name it was asked by, when that differs from rel's last part (a symlink named as a source). */
  name?: string;
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  size: number;
  linkTarget?: string;
  /** Host path to read a file's bytes from. */
  hostPath: string;
  /** For layer trees: the merged directory. */
  layered?: LayeredEntry;
}

export interface SourceTree {
  /** For messages: "the build context", "stage builder". */
  readonly what: string;
  /** Path inside the tree; symlinks followed inside it (a link out of a context is an error). */
  resolve(path: string): Promise<SourceNode | undefined>;
  /** A directory's children, sorted by name. */
  list(dir: SourceNode): Promise<SourceNode[]>;
  open(node: SourceNode): Readable;
}

function nodeOf(rel: string, st: Stats, hostPath: string, linkTarget?: string): SourceNode | undefined {
  const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : undefined;
  if (type === undefined) return undefined; // sockets, FIFOs, devices: not build input
  return {
    rel,
    type,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    mtime: Math.floor(st.mtimeMs / 1000),
    size: type === 'file' ? st.size : 0,
    hostPath,
    ...(linkTarget !== undefined ? { linkTarget } : {}),
  };
}

/** The node as named by `asked` (COPY link.txt /x/ makes /x/link.txt, whatever link.txt points to). */
function named(node: SourceNode | undefined, asked: string): SourceNode | undefined {
  const name = parts(asked).at(-1);
  if (node === undefined || name === undefined || name === '..' || name === posix.basename(node.rel)) return node;
  return { ...node, name };
}

function parts(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}

const MAX_LINKS = 40;

export class ContextTree implements SourceTree {
  readonly what = 'the build context';
  private constructor(
    readonly root: string,
    private readonly ignore: IgnoreMatcher,
  ) {}

  static async open(dir: string, ignoreText: string): Promise<ContextTree> {
    let ignore: IgnoreMatcher;
    try {
      ignore = new IgnoreMatcher(ignoreText);
    } catch (err) {
      if (!(err instanceof PatternError)) throw err;
      throw new FerryError('DOCKERFILE_INVALID', `.dockerignore: ${err.message}`, { hint: 'patterns use Go filepath.Match syntax plus **', cause: err });
    }
    return new ContextTree(await realpath(dir), ignore);
  }

  ignored(rel: string): boolean {
    return rel !== '' && this.ignore.ignored(rel);
  }

  /**
   * Resolve inside the root: `..` never climbs above it; a symlink is followed only when its
   * target stays inside the context, otherwise the path is refused (UNSAFE_PATH).
   */
  async resolve(path: string): Promise<SourceNode | undefined> {
    let todo = parts(path);
    let resolved: string[] = [];
    let links = 0;
    const asked = path;
    for (;;) {
      const c = todo.shift();
      if (c === undefined) break;
      if (c === '..') {
        if (resolved.length === 0) throw outside(asked, `${asked} is outside the build context`);
        resolved.pop();
        continue;
      }
      const rel = [...resolved, c].join('/');
      let st: Stats;
      try {
        st = await lstat(join(this.root, rel));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
        throw err;
      }
      if (st.isSymbolicLink()) {
        if (++links > MAX_LINKS) throw outside(asked, `${asked}: too many levels of symbolic links`);
        const target = await readlink(join(this.root, rel));
        if (target.startsWith('/')) throw outside(asked, `${asked} goes through the symlink ${rel} -> ${target}, which leaves the build context`);
        const next = posix.normalize(posix.join(resolved.join('/'), target));
        if (next === '..' || next.startsWith('../')) throw outside(asked, `${asked} goes through the symlink ${rel} -> ${target}, which leaves the build context`);
        todo = [...parts(next), ...todo];
        resolved = [];
        continue;
      }
      resolved.push(c);
      if (todo.length > 0 && !st.isDirectory()) return undefined;
    }
    const rel = resolved.join('/');
    const st = await lstat(join(this.root, rel));
    // An excluded directory still shows what an exception (`!dir/file`) brings back.
    if (this.ignored(rel) && !(st.isDirectory() && this.ignore.mayHoldExceptions(rel))) return undefined;
    return named(nodeOf(rel, st, join(this.root, rel)), asked);
  }

  async list(dir: SourceNode): Promise<SourceNode[]> {
    const names = (await readdir(dir.hostPath)).sort();
    const out: SourceNode[] = [];
    for (const name of names) {
      const rel = dir.rel === '' ? name : `${dir.rel}/${name}`;
      const hostPath = join(dir.hostPath, name);
      const st = await lstat(hostPath);
      if (this.ignored(rel) && !(st.isDirectory() && this.ignore.mayHoldExceptions(rel))) continue;
      const node = nodeOf(rel, st, hostPath, st.isSymbolicLink() ? await readlink(hostPath) : undefined);
      if (node !== undefined) out.push(node);
    }
    return out;
  }

  open(node: SourceNode): Readable {
    // Not through a symlink swapped in since the lstat: the file itself or an error.
    // (open() here is synchronous because SourceTree.open hands back a stream at once.)
    const fd = openSync(node.hostPath, constants.O_RDONLY | constants.O_NOFOLLOW);
    return createReadStream(node.hostPath, { fd });
  }
}

function outside(path: string, message: string): FerryError {
  return new FerryError('UNSAFE_PATH', message, { hint: `COPY and ADD read only files inside the build context (${path})` });
}

/** Another stage's or image's files: layer directories of the store, top first. */
export class LayersTree implements SourceTree {
  constructor(
    readonly what: string,
    private readonly layers: readonly string[],
  ) {}

  private async node(rel: string, entry: LayeredEntry): Promise<SourceNode | undefined> {
    const st = entry.stat;
    const node = nodeOf(rel, st, entry.hostPath, st.isSymbolicLink() ? await readlink(entry.hostPath) : undefined);
    if (node !== undefined) node.layered = entry;
    return node;
  }

  async resolve(path: string): Promise<SourceNode | undefined> {
    if (this.layers.length === 0) return undefined;
    const entry = await lookupLayered(this.layers, `/${path}`, true);
    if (entry === undefined) return undefined;
    return named(await this.node(parts(posix.normalize(`/${path}`)).join('/'), entry), path);
  }

  async list(dir: SourceNode): Promise<SourceNode[]> {
    if (dir.layered === undefined) return [];
    const rel = dir.layered.dirLayers[0] === undefined ? '' : dir.layered.hostPath.slice(dir.layered.dirLayers[0].length + 1);
    const children = await listLayeredDir(dir.layered, rel);
    const out: SourceNode[] = [];
    for (const name of [...children.keys()].sort()) {
      const node = await this.node(dir.rel === '' ? name : `${dir.rel}/${name}`, children.get(name)!);
      if (node !== undefined) out.push(node);
    }
    return out;
  }

  open(node: SourceNode): Readable {
    return createReadStream(node.hostPath);
  }
}

/** A COPY source pattern to the nodes it names: globs per path component, sorted; none: []. */
export async function expandSource(tree: SourceTree, pattern: string): Promise<SourceNode[]> {
  const comps = parts(posix.normalize(`/${pattern}`));
  if (!comps.some(hasGlob)) {
    const node = await tree.resolve(comps.join('/'));
    return node === undefined ? [] : [node];
  }
  let current: SourceNode[] = [];
  const root = await tree.resolve('');
  if (root === undefined) return [];
  current = [root];
  for (const comp of comps) {
    const next: SourceNode[] = [];
    for (const dir of current) {
      if (!hasGlob(comp)) {
        const node = await tree.resolve(dir.rel === '' ? comp : `${dir.rel}/${comp}`);
        if (node !== undefined) next.push(node);
        continue;
      }
      const real = dir.type === 'dir' ? dir : undefined;
      if (real === undefined) continue;
      for (const child of await tree.list(real)) {
        const name = posix.basename(child.rel);
        let hit: boolean;
        try {
          hit = matchComponent(comp, name);
        } catch (err) {
          if (!(err instanceof PatternError)) throw err;
          throw new FerryError('DOCKERFILE_INVALID', `${pattern}: ${err.message}`, { cause: err });
        }
        if (hit) next.push(child.type === 'symlink' ? ((await tree.resolve(child.rel)) ?? child) : child);
      }
    }
    current = next;
  }
  return current;
}

/**
 * Copy `node` of `tree` (a file, or a directory and everything below it) to `dest` on the host,
 * for `RUN --mount=type=bind`: the step sees the context as filtered by .dockerignore (or a
 * stage's files), never the context directory itself, and what it writes there is thrown away.
 * Symlinks are recreated, never followed; owners are 0:0 for the context, kept for stages.
 */
export async function materialize(tree: SourceTree, node: SourceNode, dest: string, keepOwners: boolean): Promise<void> {
  const own = async (path: string, n: SourceNode): Promise<void> => {
    await lchown(path, keepOwners ? n.uid : 0, keepOwners ? n.gid : 0);
    if (n.type !== 'symlink') await chmod(path, n.mode);
  };
  if (node.type === 'file') {
    await pipeline(tree.open(node), createWriteStream(dest, { flags: 'wx', mode: 0o600 }));
  } else if (node.type === 'symlink') {
    await symlink(node.linkTarget ?? '', dest);
  } else {
    await mkdir(dest, { mode: 0o700 });
    for (const child of await tree.list(node)) await materialize(tree, child, join(dest, posix.basename(child.rel)), keepOwners);
  }
  await own(dest, node);
}
