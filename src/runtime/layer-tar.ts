import type { BigIntStats } from 'node:fs';
import { constants as fsConstants } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { FerryError } from '../errors.js';
import { nativeFs } from '../io/native.js';
import { encodeTarHeader, padding, TAR_END, type TarHeader } from '../io/tar-format.js';

/**
 * A container's upper layer as an OCI layer tar (`commit`), the inverse of the store's unpack:
 * - a whiteout (0:0 character device) NAME becomes an empty file `.wh.NAME`;
 * - an opaque directory (trusted.overlay.opaque=y) gets a `.wh..wh..opq` entry after it;
 * - files sharing an inode become one file and hardlinks to it;
 * - xattrs: user.* (not user.overlay.*) and security.capability, as PAX SCHILY.xattr records;
 *   overlayfs's own trusted.* attributes are not the container's data and are left out.
 * Deterministic: entries sorted bytewise, parents first; no uname/gname, no atime/ctime; the
 * same upper directory always gives the same bytes. Names stay raw bytes (Buffers).
 */
const WHITEOUT_PREFIX = Buffer.from('.wh.');
const OPAQUE = Buffer.from('.wh..wh..opq');

type HeaderFields = TarHeader & { name: Buffer };

/** Header block(s) for one entry; device fields are written (as 0) on every entry, as before. */
function tarHeader(f: HeaderFields): Buffer {
  return encodeTarHeader({ ...f, devmajor: f.devmajor ?? 0, devminor: f.devminor ?? 0 });
}

function keptXattrs(path: Buffer): Array<[string, Buffer]> {
  const native = nativeFs();
  const out: Array<[string, Buffer]> = [];
  for (const name of native.llistxattr(path).sort()) {
    if (!((name.startsWith('user.') && !name.startsWith('user.overlay.')) || name === 'security.capability')) continue;
    const value = native.lgetxattr(path, name);
    if (value !== null) out.push([name, value]);
  }
  return out;
}

function isOpaque(path: Buffer): boolean {
  const native = nativeFs();
  for (const name of ['trusted.overlay.opaque', 'user.overlay.opaque']) {
    const v = native.lgetxattr(path, name);
    if (v !== null && v.toString() === 'y') return true;
  }
  return false;
}

function joinName(dir: Buffer, name: Buffer): Buffer {
  return dir.length === 0 ? name : Buffer.concat([dir, Buffer.from('/'), name]);
}

function baseFields(st: BigIntStats, name: Buffer): Pick<HeaderFields, 'name' | 'mode' | 'uid' | 'gid' | 'mtime'> {
  return { name, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtime: Number(st.mtimeMs / 1000n) };
}

/** The tar stream of `upper` (its root directory itself is not an entry, as in docker layers). */
export async function* upperLayerTar(upper: string): AsyncGenerator<Buffer> {
  const root = Buffer.from(upper);
  const links = new Map<string, Buffer>(); // "dev:ino" -> first name
  const walk = async function* (rel: Buffer): AsyncGenerator<Buffer> {
    const dirPath = rel.length === 0 ? root : Buffer.concat([root, Buffer.from('/'), rel]);
    const names = (await readdir(dirPath, { encoding: 'buffer' })).sort(Buffer.compare);
    for (const name of names) {
      const entryName = joinName(rel, name);
      const path = Buffer.concat([dirPath, Buffer.from('/'), name]);
      const st = await lstat(path, { bigint: true });
      if (st.isCharacterDevice() && st.rdev === 0n) {
        yield tarHeader({ name: joinName(rel, Buffer.concat([WHITEOUT_PREFIX, name])), mode: 0o600, uid: 0, gid: 0, size: 0, mtime: 0, typeflag: '0' });
        continue;
      }
      const fields = baseFields(st, entryName);
      const xattrs = keptXattrs(path);
      if (st.isDirectory()) {
        yield tarHeader({ ...fields, name: Buffer.concat([entryName, Buffer.from('/')]), size: 0, typeflag: '5', xattrs });
        if (isOpaque(path)) {
          yield tarHeader({ name: joinName(entryName, OPAQUE), mode: 0o600, uid: 0, gid: 0, size: 0, mtime: 0, typeflag: '0' });
        }
        yield* walk(entryName);
      } else if (st.isSymbolicLink()) {
        yield tarHeader({ ...fields, size: 0, typeflag: '2', linkname: await readlink(path, { encoding: 'buffer' }), xattrs });
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1n ? links.get(key) : undefined;
        if (first !== undefined) {
          yield tarHeader({ ...fields, size: 0, typeflag: '1', linkname: first });
          continue;
        }
        if (st.nlink > 1n) links.set(key, entryName);
        const size = Number(st.size);
        yield tarHeader({ ...fields, size, typeflag: '0', xattrs });
        yield* fileBytes(path, size, entryName);
        yield padding(size);
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        // glibc's major/minor encoding of dev_t.
        const rdev = st.rdev;
        const devmajor = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
        const devminor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
        yield tarHeader({ ...fields, size: 0, typeflag: st.isCharacterDevice() ? '3' : '4', devmajor, devminor, xattrs });
      } else if (st.isFIFO()) {
        yield tarHeader({ ...fields, size: 0, typeflag: '6', xattrs });
      }
      // Sockets are not layer content (docker skips them too).
    }
  };
  yield* walk(Buffer.alloc(0));
  yield TAR_END;
}

async function* fileBytes(path: Buffer, size: number, name: Buffer): AsyncGenerator<Buffer> {
  const handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    let done = 0;
    while (done < size) {
      const buf = Buffer.alloc(Math.min(1 << 20, size - done));
      const { bytesRead } = await handle.read(buf, 0, buf.length, done);
      if (bytesRead === 0) break;
      done += bytesRead;
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
    if (done !== size) {
      // The container changed the file while it was being read (commit of a running container).
      throw new FerryError('IO_ERROR', `commit: ${name.toString()} changed size while being read (${done} of ${size} bytes)`, {
        hint: 'stop the container before committing it, or commit again',
      });
    }
  } finally {
    await handle.close();
  }
}
