import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../errors.js';

/**
 * The syscalls Node has no binding for (native/ferry_native.c, built by node-gyp at `npm ci`).
 * Paths may be Buffers so names that are not UTF-8 reach the kernel byte for byte. Errors carry
 * `code` = the errno name, like Node's fs errors. All calls are synchronous: one short syscall each.
 */
export interface NativeFs {
  /** mknod(2); `mode` includes the type bits (S_IFCHR, S_IFBLK, S_IFIFO). */
  mknod(path: string | Buffer, mode: number, major: number, minor: number): void;
  lsetxattr(path: string | Buffer, name: string, value: Buffer): void;
  /** The value, or null when the attribute is not set. */
  lgetxattr(path: string | Buffer, name: string): Buffer | null;
  llistxattr(path: string | Buffer): string[];
  /** utimensat(AT_SYMLINK_NOFOLLOW): sets a symlink's own times. */
  lutimes(path: string | Buffer, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  /** syncfs(2) on the filesystem holding `path`. */
  syncfs(path: string | Buffer): void;
}

const ADDON = 'ferry_native.node';
let loaded: NativeFs | undefined;

/** The package root: src/io/ and dist/io/ are both two levels below it. */
function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** Load the addon once; a clear FerryError when it was not built. */
export function nativeFs(): NativeFs {
  if (loaded !== undefined) return loaded;
  const path = resolve(packageRoot(), 'build', 'Release', ADDON);
  if (!existsSync(path)) {
    throw new FerryError('UNSUPPORTED', `native helper ${path} is missing: the addon was not built`, {
      hint: 'run `npm ci` (or `npm rebuild`) in the ferry package; it needs a C compiler, make and python3 for node-gyp',
    });
  }
  try {
    loaded = createRequire(import.meta.url)(path) as NativeFs;
  } catch (err) {
    throw new FerryError('UNSUPPORTED', `native helper ${path} could not be loaded`, {
      cause: err,
      hint: 'rebuild it for this Node version with `npm rebuild`',
    });
  }
  return loaded;
}
