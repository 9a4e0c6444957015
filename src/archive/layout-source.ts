import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { addAbortSignal, type Readable } from 'node:stream';
import { FerryError, messageOf } from '../errors.js';
import type { OpenOptions } from '../oci/image.js';
import { fileStamp } from '../io/file-stamp.js';
import { normalizeEntryName, type TarIndex } from './tar-index.js';

/**
 * Where the files of an OCI image layout are read from: a directory, or entries of a tar
 * (oci-archive, or the layout inside a docker 25+ `docker save`). Paths are layout-relative
 * (`index.json`, `blobs/sha256/<hex>`) and never leave the layout.
 */
export interface LayoutSource {
  /** Names the layout in errors: "OCI layout /srv/app", "oci-archive /x/app.tar". */
  readonly what: string;
  /** Size of the file at `path`, or undefined when it is absent. */
  size(path: string): Promise<number | undefined>;
  /** A small file whole (index.json, manifests, configs); NOT_FOUND when absent. */
  read(path: string, max: number): Promise<Buffer>;
  /** `size`: the file's size as `size(path)` gave it, when known: the stream reads that far and no further. */
  open(path: string, options?: OpenOptions, size?: number): Promise<Readable>;
  /**
   * What changes whenever the file at `path` does (device, inode, size, modification and change
   * times), when the source can tell without reading it; undefined when absent or unknown.
   */
  stamp?(path: string): Promise<string | undefined>;
}

function missing(what: string, path: string): FerryError {
  return new FerryError('NOT_FOUND', `${what}: ${path} is missing`, {
    hint: 'the layout is incomplete; copy it again or re-create it with skopeo copy',
  });
}

function tooBig(what: string, path: string, size: number, max: number): FerryError {
  return new FerryError('INVALID_MANIFEST', `${what}: ${path} is ${size} bytes, over the ${max}-byte limit`);
}

export function dirSource(dir: string, what = `OCI layout ${dir}`): LayoutSource {
  const resolve = (path: string): string => join(dir, normalizeEntryName(path, what));
  const fail = (path: string, err: unknown): FerryError => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return missing(what, path);
    return new FerryError('IO_ERROR', `${what}: read ${path}: ${messageOf(err)}`, { cause: err });
  };
  return {
    what,
    async size(path) {
      try {
        const st = await stat(resolve(path));
        if (!st.isFile()) throw new FerryError('INVALID_MANIFEST', `${what}: ${path} is not a regular file`);
        return st.size;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        if (err instanceof FerryError) throw err;
        throw fail(path, err);
      }
    },
    async read(path, max) {
      let handle;
      try {
        handle = await open(resolve(path), 'r');
      } catch (err) {
        throw fail(path, err);
      }
      try {
        const st = await handle.stat();
        if (!st.isFile()) throw new FerryError('INVALID_MANIFEST', `${what}: ${path} is not a regular file`);
        if (st.size > max) throw tooBig(what, path, st.size, max);
        return await handle.readFile();
      } catch (err) {
        if (err instanceof FerryError) throw err;
        throw fail(path, err);
      } finally {
        await handle.close();
      }
    },
    async stamp(path) {
      try {
        return fileStamp(await stat(resolve(path), { bigint: true }));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw fail(path, err);
      }
    },
    async open(path, options, size) {
      try {
        // Open first, so a missing blob rejects here rather than erroring a stream later.
        const handle = await open(resolve(path), 'r');
        // To the known size, not until a read returns nothing: that last read costs a 64 KiB
        // buffer, as much as a small layer's bytes (1600 of them in a scale export).
        const stream = handle.createReadStream(size !== undefined && size > 0 ? { end: size - 1 } : {});
        return options?.signal ? addAbortSignal(options.signal, stream) : stream;
      } catch (err) {
        throw fail(path, err);
      }
    },
  };
}

/** A number per indexed tar: entries of one index never change, those of another may. */
const tarIds = new WeakMap<TarIndex, number>();
let tarsIndexed = 0;

function tarIdOf(index: TarIndex): number {
  const id = tarIds.get(index) ?? tarsIndexed++;
  tarIds.set(index, id);
  return id;
}

/** The layout at `prefix` (usually the root) inside an indexed tar. */
export function tarSource(index: TarIndex, prefix = ''): LayoutSource {
  const what = index.what;
  const entry = (path: string) => index.lookup(prefix === '' ? path : `${prefix}/${path}`);
  const tarId = tarIdOf(index);
  return {
    what,
    async stamp(path) {
      const e = entry(path);
      return e === undefined ? undefined : `tar ${tarId} ${e.offset} ${e.size}`;
    },
    async size(path) {
      return entry(path)?.size;
    },
    async read(path, max) {
      const e = entry(path);
      if (e === undefined) throw missing(what, path);
      if (e.size > max) throw tooBig(what, path, e.size, max);
      return index.read(e, max);
    },
    async open(path, options) {
      const e = entry(path);
      if (e === undefined) throw missing(what, path);
      return index.open(e, options);
    },
  };
}
