import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { FerryError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { MeasureDigest } from '../io/verify-digest.js';
import { errnoCode, errnoReason, fileTypeOf, nativeFs, readFd, sameInode, type FdStat, type NativeFs } from '../io/native.js';
import { encodeTarHeader, padding, TAR_END, type TarHeader } from '../io/tar-format.js';

/**
 * A container's upper layer as an OCI layer tar (`commit`, later `build`'s RUN layers), the
 * inverse of the store's unpack:
 * - a whiteout (0:0 character device) NAME becomes an empty file `.wh.NAME`;
 * - an opaque directory (trusted.overlay.opaque=y) gets a `.wh..wh..opq` entry after it;
 * - files sharing an inode become one file and hardlinks to it;
 * - xattrs: user.* (not user.overlay.*) and security.capability, as PAX SCHILY.xattr records;
 *   overlayfs's own trusted.* attributes are not the container's data and are left out.
 * Deterministic: entries sorted bytewise, parents first; no uname/gname, no atime/ctime; the
 * same upper directory always gives the same bytes. Names stay raw bytes (Buffers).
 *
 * The upper directory may belong to a running container that changes it while we read it, and
 * may hold anything (issue 10, item 2): so it is walked from directory fds (see openUpperEntry),
 * never by path, and only a regular file's own fd is read. What the container changes during the
 * walk ends up as one of the states it had, or left out; never anything outside the upper dir.
 */
const WHITEOUT_PREFIX = Buffer.from('.wh.');
const OPAQUE = Buffer.from('.wh..wh..opq');
/** Directory fds held open at once; deeper trees are refused (a tar path that long fits no host path anyway). */
export const MAX_UPPER_DEPTH = 2048;
/** How often an entry the container replaces between our listing and our open is looked at again. */
const ATTEMPTS = 3;

type HeaderFields = TarHeader & { name: Buffer };

/** One entry of an upper directory, as it was when it was opened. */
export type UpperEntry =
  | { kind: 'whiteout'; st: FdStat }
  /** `fd`: the directory itself, opened O_NOFOLLOW; the caller closes it. */
  | { kind: 'dir'; st: FdStat; fd: number }
  /** `fd`: readable, a regular file (fstat says so), the inode the listing showed; the caller closes it. */
  | { kind: 'file'; st: FdStat; fd: number }
  | { kind: 'symlink'; st: FdStat; target: Buffer }
  | { kind: 'char' | 'block' | 'fifo' | 'socket'; st: FdStat };

/** The path as the container sees it, for messages. */
export function containerPath(rel: Buffer): string {
  return `/${rel.toString()}`;
}

function walkError(what: string, verb: string, rel: Buffer, err: unknown): FerryError {
  return new FerryError('IO_ERROR', `${what}: ${verb} ${containerPath(rel)}: ${errnoReason(err)}`, { cause: err });
}

/** Codes that mean "the name no longer leads to what we listed": look again. */
function replaced(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR' || code === 'EINVAL';
}

/** fstat of a just-opened fd, closing it when even that fails. */
function fstatOpened(native: NativeFs, fd: number): FdStat {
  let ok = false;
  try {
    const st = native.fstat(fd);
    ok = true;
    return st;
  } finally {
    if (!ok) native.close(fd);
  }
}

/**
 * Open `name` of the directory fd `dirFd` (`rel` names it for messages) as what it is now.
 * The rule for a container racing us: a directory is entered only through openat(O_DIRECTORY|
 * O_NOFOLLOW); a regular file is read only through an fd of the same inode the listing showed
 * (O_PATH, checked, then reopened read-only and non-blocking); symlinks, devices and FIFOs are
 * never opened. When the name was replaced in between, it is looked at again (ATTEMPTS times);
 * gone, or still being replaced after that: undefined, and the entry is left out, as if the
 * container had removed it just before the commit.
 */
export function openUpperEntry(dirFd: number, name: Buffer, rel: Buffer, what: string): UpperEntry | undefined {
  const native = nativeFs();
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    let st: FdStat;
    try {
      st = native.fstatat(dirFd, name);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw walkError(what, 'stat', rel, err);
    }
    const type = fileTypeOf(st);
    try {
      if (type === 'dir') {
        const fd = native.openDirAt(dirFd, name);
        return { kind: 'dir', st: fstatOpened(native, fd), fd };
      }
      if (type === 'file') {
        const pathFd = native.openPathAt(dirFd, name);
        let fd: number | null;
        try {
          fd = native.reopenRegular(pathFd);
        } finally {
          native.close(pathFd);
        }
        if (fd === null) continue; // no longer a regular file
        const now = fstatOpened(native, fd);
        if (!sameInode(now, st)) {
          native.close(fd);
          continue;
        }
        return { kind: 'file', st: now, fd };
      }
      if (type === 'symlink') return { kind: 'symlink', st, target: native.readlinkat(dirFd, name) };
      if (type === 'char' && st.rdev === 0n) return { kind: 'whiteout', st };
      return { kind: type, st };
    } catch (err) {
      if (replaced(err)) continue;
      if (errnoCode(err) === 'EAGAIN') {
        throw new FerryError('IO_ERROR', `${what}: ${containerPath(rel)} cannot be read now: the container holds a lease on it`, {
          cause: err,
          hint: 'commit again, or stop the container first',
        });
      }
      throw walkError(what, 'open', rel, err);
    }
  }
  return undefined;
}

/** The names in a directory fd, sorted bytewise. */
export function listDirFd(fd: number, rel: Buffer, what: string): Buffer[] {
  try {
    return nativeFs().readDirFd(fd).sort(Buffer.compare);
  } catch (err) {
    throw walkError(what, 'list', rel, err);
  }
}

const KEPT_XATTR = (name: string): boolean => (name.startsWith('user.') && !name.startsWith('user.overlay.')) || name === 'security.capability';

/** The xattrs a layer keeps, of an opened entry (fd) or, for one never opened, of `name` in `dirFd`. */
function keptXattrs(entry: UpperEntry, dirFd: number, name: Buffer, rel: Buffer, what: string): Array<[string, Buffer]> {
  const native = nativeFs();
  const out: Array<[string, Buffer]> = [];
  try {
    const fd = entry.kind === 'dir' || entry.kind === 'file' ? entry.fd : undefined;
    const names = fd !== undefined ? native.flistxattr(fd) : native.llistxattrAt(dirFd, name);
    for (const attr of names.sort()) {
      if (!KEPT_XATTR(attr)) continue;
      const value = fd !== undefined ? native.fgetxattr(fd, attr) : native.lgetxattrAt(dirFd, name, attr);
      if (value !== null) out.push([attr, value]);
    }
  } catch (err) {
    // Replaced since it was opened: what it was is gone with its xattrs.
    if (entry.kind !== 'dir' && entry.kind !== 'file' && errnoCode(err) === 'ENOENT') return out;
    throw walkError(what, 'read the extended attributes of', rel, err);
  }
  return out;
}

/** Is this opened directory opaque (hides the directory of lower layers)? */
export function isOpaqueDirFd(fd: number, rel: Buffer, what: string): boolean {
  const native = nativeFs();
  try {
    for (const name of ['trusted.overlay.opaque', 'user.overlay.opaque']) {
      const v = native.fgetxattr(fd, name);
      if (v !== null && v.toString() === 'y') return true;
    }
  } catch (err) {
    throw walkError(what, 'read the extended attributes of', rel, err);
  }
  return false;
}

/** Header block(s) for one entry; device fields are written (as 0) on every entry, as before. */
function tarHeader(f: HeaderFields): Buffer {
  return encodeTarHeader({ ...f, devmajor: f.devmajor ?? 0, devminor: f.devminor ?? 0 });
}

function joinName(dir: Buffer, name: Buffer): Buffer {
  return dir.length === 0 ? name : Buffer.concat([dir, Buffer.from('/'), name]);
}

/** Whole seconds as Node's BigIntStats gave them (mtimeMs / 1000n truncates), so layer bytes stay as they were. */
function tarMtime(st: FdStat): number {
  const ms = BigInt(st.mtimeSec) * 1000n + BigInt(Math.floor(st.mtimeNsec / 1e6));
  return Number(ms / 1000n);
}

function entryFields(st: FdStat, name: Buffer): Pick<HeaderFields, 'name' | 'mode' | 'uid' | 'gid' | 'mtime'> {
  return { name, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: tarMtime(st) };
}

export interface UpperLayerTarOptions {
  /** What is being written, for messages ("commit container web"); default "layer tar". */
  what?: string;
  /** Clamp mtimes to this (seconds): `ferry build` with SOURCE_DATE_EPOCH makes reproducible layers. */
  maxMtime?: number;
}

/** The tar stream of `upper` (its root directory itself is not an entry, as in docker layers). */
export async function* upperLayerTar(upper: string, options: UpperLayerTarOptions = {}): AsyncGenerator<Buffer> {
  const what = options.what ?? 'layer tar';
  const maxMtime = options.maxMtime;
  const baseFields = (st: FdStat, name: Buffer): ReturnType<typeof entryFields> => {
    const f = entryFields(st, name);
    return maxMtime !== undefined && f.mtime > maxMtime ? { ...f, mtime: maxMtime } : f;
  };
  const native = nativeFs();
  const links = new Map<string, Buffer>(); // "dev:ino" -> first name
  let rootFd: number;
  try {
    rootFd = native.openDir(upper);
  } catch (err) {
    throw new FerryError('IO_ERROR', `${what}: open the upper layer: ${errnoReason(err)}`, { cause: err });
  }
  const walk = async function* (dirFd: number, rel: Buffer, depth: number): AsyncGenerator<Buffer> {
    if (depth > MAX_UPPER_DEPTH) {
      throw new FerryError('UNSUPPORTED', `${what}: ${containerPath(rel)} is nested more than ${MAX_UPPER_DEPTH} directories deep`);
    }
    for (const name of listDirFd(dirFd, rel, what)) {
      const entryName = joinName(rel, name);
      const entry = openUpperEntry(dirFd, name, entryName, what);
      if (entry === undefined) continue;
      if (entry.kind === 'whiteout') {
        yield tarHeader({ name: joinName(rel, Buffer.concat([WHITEOUT_PREFIX, name])), mode: 0o600, uid: 0, gid: 0, size: 0, mtime: 0, typeflag: '0' });
        continue;
      }
      if (entry.kind === 'dir' || entry.kind === 'file') {
        try {
          yield* writeOpened(entry, dirFd, name, entryName, depth);
        } finally {
          native.close(entry.fd);
        }
        continue;
      }
      const st = entry.st;
      const fields = baseFields(st, entryName);
      if (entry.kind === 'socket') continue; // not layer content (docker skips them too)
      const xattrs = keptXattrs(entry, dirFd, name, entryName, what);
      if (entry.kind === 'symlink') {
        yield tarHeader({ ...fields, size: 0, typeflag: '2', linkname: entry.target, xattrs });
      } else if (entry.kind === 'char' || entry.kind === 'block') {
        yield tarHeader({ ...fields, size: 0, typeflag: entry.kind === 'char' ? '3' : '4', devmajor: st.rdevMajor, devminor: st.rdevMinor, xattrs });
      } else {
        yield tarHeader({ ...fields, size: 0, typeflag: '6', xattrs });
      }
    }
  };
  const writeOpened = async function* (
    entry: Extract<UpperEntry, { kind: 'dir' | 'file' }>,
    dirFd: number,
    name: Buffer,
    entryName: Buffer,
    depth: number,
  ): AsyncGenerator<Buffer> {
    const st = entry.st;
    const fields = baseFields(st, entryName);
    if (entry.kind === 'dir') {
      const xattrs = keptXattrs(entry, dirFd, name, entryName, what);
      yield tarHeader({ ...fields, name: Buffer.concat([entryName, Buffer.from('/')]), size: 0, typeflag: '5', xattrs });
      if (isOpaqueDirFd(entry.fd, entryName, what)) {
        yield tarHeader({ name: joinName(entryName, OPAQUE), mode: 0o600, uid: 0, gid: 0, size: 0, mtime: 0, typeflag: '0' });
      }
      yield* walk(entry.fd, entryName, depth + 1);
      return;
    }
    const key = `${st.dev}:${st.ino}`;
    const first = st.nlink > 1 ? links.get(key) : undefined;
    if (first !== undefined) {
      yield tarHeader({ ...fields, size: 0, typeflag: '1', linkname: first });
      return;
    }
    if (st.nlink > 1) links.set(key, entryName);
    const xattrs = keptXattrs(entry, dirFd, name, entryName, what);
    yield tarHeader({ ...fields, size: st.size, typeflag: '0', xattrs });
    yield* fileBytes(entry.fd, st.size, entryName, what);
    yield padding(st.size);
  };
  try {
    yield* walk(rootFd, Buffer.alloc(0), 0);
  } finally {
    native.close(rootFd);
  }
  yield TAR_END;
}

/** Exactly `size` bytes of an opened regular file (the header already promised that many). */
async function* fileBytes(fd: number, size: number, name: Buffer, what: string): AsyncGenerator<Buffer> {
  let done = 0;
  try {
    for await (const chunk of readFd(fd, size)) {
      done += chunk.length;
      yield chunk;
    }
  } catch (err) {
    throw walkError(what, 'read', name, err);
  }
  if (done !== size) {
    // The container truncated the file while it was being read (commit of a running container).
    throw new FerryError('IO_ERROR', `${what}: ${containerPath(name)} changed size while being read (${done} of ${size} bytes)`, {
      hint: 'commit with --pause (the default), stop the container first, or commit again',
    });
  }
}

export interface WrittenLayer {
  diffId: Digest;
  digest: Digest;
  size: number;
}

/** A layer tar stream gzipped to `file` in one pass, with its diffId (tar) and digest and size (gzip). */
export async function writeLayerFile(tar: AsyncIterable<Buffer>, file: string): Promise<WrittenLayer> {
  const diff = new MeasureDigest();
  const blob = new MeasureDigest();
  await pipeline(Readable.from(tar), diff, createGzip({ level: 6 }), blob, createWriteStream(file, { mode: 0o600 }));
  return { diffId: diff.digest, digest: blob.digest, size: blob.size };
}
