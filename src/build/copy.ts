import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { lookupLayered, type LayeredEntry } from '../runtime/layered-fs.js';
import type { LayerEntry } from './layer-writer.js';
import type { SourceNode, SourceTree } from './source-tree.js';

/**
 * COPY/ADD as data: which entries the new layer holds, by docker's rules:
 * - several sources, or a destination ending in '/', make the destination a directory;
 * - a file copied to an existing directory lands inside it, otherwise it is the destination;
 * - a directory's contents (not the directory itself) are copied into the destination;
 * - missing parents, and the destination of a directory's contents, are created 0755, owned by
 *   the --chown user or root; existing ones keep the image's metadata;
 * - files from the context belong to 0:0, from a stage or image they keep their owners;
 *   --chown and --chmod apply to everything copied.
 * Also the step's cache input: every entry's path, type, mode, owner, link target and content
 * digest, never its mtime (touching a file keeps the cache).
 */
export interface CopySource {
  tree: SourceTree;
  node: SourceNode;
}

export interface CopyPlanInput {
  sources: readonly CopySource[];
  /** Heredoc files (`COPY <<EOF /dest`). */
  inline?: ReadonlyArray<{ name: string; content: Buffer }>;
  /** Absolute; a trailing '/' means a directory. */
  dest: string;
  /** The stage's layer directories, top first (to see what the destination is now). */
  layers: readonly string[];
  owner?: { uid: number; gid: number };
  chmod?: number;
  /** Keep the sources' owners (--from) instead of 0:0. */
  keepOwners: boolean;
  /** mtime for directories the copy creates. */
  now: number;
}

export interface CopyPlan {
  entries: LayerEntry[];
  /** sha256 over what was copied (not mtimes), for the cache key. */
  contentKey: string;
}

/** Where a directory of the image really is (symlinks followed inside the image), if it is one. */
async function realDir(layers: readonly string[], path: string): Promise<string | undefined> {
  if (layers.length === 0) return undefined;
  const entry = await lookupLayered(layers, path, true);
  if (entry === undefined || !entry.stat.isDirectory()) return undefined;
  const top = entry.dirLayers[0];
  return top === undefined ? path : `/${entry.hostPath.slice(top.length + 1)}`;
}

/**
 * The destination as the image resolves it: an existing directory (also through a symlink such
 * as /var/run -> /run) is written where it really is, so the copy never replaces a link by a
 * directory; otherwise its nearest existing ancestor, resolved, plus the rest of the path.
 */
async function canonical(layers: readonly string[], path: string): Promise<{ path: string; isDir: boolean }> {
  const dir = await realDir(layers, path);
  if (dir !== undefined) return { path: dir, isDir: true };
  // The nearest existing ancestor, where it really is, plus the parts still to be made.
  const rest = [posix.basename(path)];
  for (let parent = posix.dirname(path); parent !== '/'; parent = posix.dirname(parent)) {
    const real = await realDir(layers, parent);
    if (real !== undefined) return { path: posix.join(real, ...rest), isDir: false };
    rest.unshift(posix.basename(parent));
  }
  return { path: posix.join('/', ...rest), isDir: false };
}

async function imageEntry(layers: readonly string[], path: string): Promise<LayeredEntry | undefined> {
  if (layers.length === 0) return undefined;
  return lookupLayered(layers, path, false);
}

export async function planCopy(input: CopyPlanInput): Promise<CopyPlan> {
  const hash = createHash('sha256');
  const entries: LayerEntry[] = [];
  const made = new Set<string>();
  const owner = (n: SourceNode): { uid: number; gid: number } => input.owner ?? (input.keepOwners ? { uid: n.uid, gid: n.gid } : { uid: 0, gid: 0 });
  const modeOf = (n: SourceNode): number => (input.chmod !== undefined && n.type !== 'symlink' ? input.chmod : n.mode);

  const addNode = async (tree: SourceTree, node: SourceNode, target: string): Promise<void> => {
    const path = target.replace(/^\/+/, '');
    const o = owner(node);
    const entry: LayerEntry = { path, type: node.type, mode: modeOf(node), uid: o.uid, gid: o.gid, mtime: node.mtime };
    let digest = '';
    if (node.type === 'symlink') entry.linkTarget = node.linkTarget ?? '';
    if (node.type === 'file') {
      entry.content = { tree, node };
      const h = createHash('sha256');
      for await (const chunk of tree.open(node)) h.update(chunk as Buffer);
      digest = h.digest('hex');
    }
    hash.update(`${JSON.stringify([path, node.type, entry.mode, o.uid, o.gid, entry.linkTarget ?? '', digest])}\n`);
    entries.push(entry);
    made.add(path);
    if (node.type === 'dir') {
      for (const child of await tree.list(node)) await addNode(tree, child, posix.join(target, posix.basename(child.rel)));
    }
  };

  const count = input.sources.length + (input.inline?.length ?? 0);
  const destIsDir = input.dest.endsWith('/') || count > 1;
  const resolved = await canonical(input.layers, posix.normalize(input.dest).replace(/(.)\/+$/, '$1'));
  const dest = resolved.path;
  const existing = resolved.isDir ? await imageEntry(input.layers, dest) : undefined;
  const intoDir = destIsDir || resolved.isDir;

  for (const { tree, node } of input.sources) {
    if (node.type === 'dir') {
      // The destination of a directory's contents is made like a missing parent (0755, the
      // --chown owner or root; buildah's rule), unless it exists already.
      const path = dest.replace(/^\/+/, '');
      if (path !== '' && existing === undefined && !made.has(path)) {
        const o = input.owner ?? { uid: 0, gid: 0 };
        entries.push({ path, type: 'dir', mode: 0o755, uid: o.uid, gid: o.gid, mtime: node.mtime });
        made.add(path);
        hash.update(`${JSON.stringify([path, 'dir', 0o755, o.uid, o.gid])}\n`);
      }
      for (const child of await tree.list(node)) await addNode(tree, child, posix.join(dest, posix.basename(child.rel)));
    } else {
      await addNode(tree, node, intoDir ? posix.join(dest, node.name ?? posix.basename(node.rel)) : dest);
    }
  }
  for (const f of input.inline ?? []) {
    const target = intoDir ? posix.join(dest, f.name) : dest;
    const path = target.replace(/^\/+/, '');
    const o = input.owner ?? { uid: 0, gid: 0 };
    const mode = input.chmod ?? 0o644;
    entries.push({ path, type: 'file', mode, uid: o.uid, gid: o.gid, mtime: input.now, content: f.content });
    made.add(path);
    hash.update(`${JSON.stringify([path, 'file', mode, o.uid, o.gid, createHash('sha256').update(f.content).digest('hex')])}\n`);
  }

  // Every parent of what is copied: the image's own directory, or a new 0755 directory owned by
  // the --chown user (root without one), as buildah makes them.
  const parents = new Set<string>();
  for (const e of entries) {
    let p = posix.dirname(e.path);
    while (p !== '.' && p !== '/' && p !== '') {
      parents.add(p);
      p = posix.dirname(p);
    }
  }
  for (const p of [...parents].sort()) {
    if (made.has(p)) continue;
    const found = await imageEntry(input.layers, `/${p}`);
    if (found !== undefined && found.stat.isDirectory()) {
      const st = found.stat;
      entries.push({ path: p, type: 'dir', mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) });
    } else {
      const o = input.owner ?? { uid: 0, gid: 0 };
      entries.push({ path: p, type: 'dir', mode: 0o755, uid: o.uid, gid: o.gid, mtime: input.now });
      hash.update(`${JSON.stringify([p, 'dir', 0o755, o.uid, o.gid])}\n`);
    }
  }
  return { entries, contentKey: hash.digest('hex') };
}
