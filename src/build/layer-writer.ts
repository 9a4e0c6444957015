import { FerryError } from '../errors.js';
import { writeLayerFile, type WrittenLayer } from '../runtime/layer-tar.js';
import { encodeTarHeader, padding, TAR_END } from '../io/tar-format.js';
import type { SourceNode, SourceTree } from './source-tree.js';

/**
 * A COPY/ADD layer written straight from its sources (no container): entries sorted with
 * parents first, fixed header fields (no uname/gname, no atime), mtimes clamped to
 * SOURCE_DATE_EPOCH when given; then gzip (Node's zlib writes mtime 0 in its header), so the
 * same entries always give the same diffId and digest.
 */
export interface LayerEntry {
  /** Path in the image, no leading slash. */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkTarget?: string;
  /** A file's bytes: from a source tree, or given. */
  content?: { tree: SourceTree; node: SourceNode } | Buffer;
}

function compareComponents(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const c = Buffer.compare(Buffer.from(pa[i]!), Buffer.from(pb[i]!));
    if (c !== 0) return c;
  }
  return pa.length - pb.length;
}

async function* entryBytes(entries: readonly LayerEntry[], maxMtime: number | undefined): AsyncGenerator<Buffer> {
  for (const e of entries) {
    const mtime = maxMtime !== undefined && e.mtime > maxMtime ? maxMtime : e.mtime;
    const base = { mode: e.mode, uid: e.uid, gid: e.gid, mtime, devmajor: 0, devminor: 0 };
    if (e.type === 'dir') {
      yield encodeTarHeader({ ...base, name: `${e.path}/`, typeflag: '5', size: 0 });
    } else if (e.type === 'symlink') {
      yield encodeTarHeader({ ...base, name: e.path, typeflag: '2', size: 0, linkname: e.linkTarget ?? '' });
    } else {
      const content = e.content;
      if (content === undefined || Buffer.isBuffer(content)) {
        const bytes = content ?? Buffer.alloc(0);
        yield encodeTarHeader({ ...base, name: e.path, typeflag: '0', size: bytes.length });
        yield bytes;
        yield padding(bytes.length);
        continue;
      }
      const size = content.node.size;
      yield encodeTarHeader({ ...base, name: e.path, typeflag: '0', size });
      let seen = 0;
      for await (const chunk of content.tree.open(content.node)) {
        const b = chunk as Buffer;
        const take = Math.min(b.length, size - seen);
        if (take > 0) yield b.subarray(0, take);
        seen += take;
      }
      if (seen !== size) {
        throw new FerryError('IO_ERROR', `${content.tree.what}: ${content.node.rel} changed size while being read (${seen} of ${size} bytes)`);
      }
      yield padding(size);
    }
  }
  yield TAR_END;
}

/** Sorted, one entry per path (a later entry for the same path wins, as a later copy would). */
export function orderEntries(entries: readonly LayerEntry[]): LayerEntry[] {
  const byPath = new Map<string, LayerEntry>();
  for (const e of entries) byPath.set(e.path, e);
  return [...byPath.values()].sort((a, b) => compareComponents(a.path, b.path));
}

/** COPY/ADD layers: the entries sorted, as one gzipped layer file (the runtime's layer writer). */
export async function writeEntriesLayer(entries: readonly LayerEntry[], file: string, maxMtime: number | undefined): Promise<WrittenLayer> {
  return writeLayerFile(entryBytes(orderEntries(entries), maxMtime), file);
}
