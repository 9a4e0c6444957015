import { read, readSync } from 'node:fs';
import { promisify } from 'node:util';
import { digestOf, sha256Digest, type Digest, type DigestAlgorithm } from '../oci/digest.js';
import { loadAddon } from './native-parts.js';

/**
 * The syscalls Node has no binding for (native/ferry_native.c, built by node-gyp at `npm ci`).
 * Paths may be Buffers so names that are not UTF-8 reach the kernel byte for byte. Errors carry
 * `code` = the errno name, like Node's fs errors. All calls are synchronous (one short syscall each) but waitExit.
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

  // Walking a tree that a running container may change under us: every *At call takes one name
  // component (no '/', not . or ..) in a directory fd; nothing follows a symlink. Fds are
  // O_CLOEXEC; the caller closes them with close().

  /** The root of a walk: a directory ferry itself names (followed), O_RDONLY. */
  openDir(path: string | Buffer): number;
  /** The directory `name` in `dirFd` (O_DIRECTORY|O_NOFOLLOW); ELOOP or ENOTDIR for anything else. */
  openDirAt(dirFd: number, name: string | Buffer): number;
  /** An O_PATH fd of `name` itself (a symlink stays a symlink); opens no device or FIFO. */
  openPathAt(dirFd: number, name: string | Buffer): number;
  /** openat2(2) to an O_PATH fd with RESOLVE_* flags; code ENOSYS before Linux 5.6. */
  openat2(dirFd: number, path: string | Buffer, resolve: number): number;
  /**
   * A readable fd (O_RDONLY|O_NONBLOCK|O_NOCTTY) of the inode an O_PATH fd holds, or null when it
   * is not a regular file: devices and FIFOs are never opened.
   */
  reopenRegular(pathFd: number): number | null;
  fstat(fd: number): FdStat;
  /** AT_SYMLINK_NOFOLLOW. */
  fstatat(dirFd: number, name: string | Buffer): FdStat;
  /** code EINVAL when `name` is not a symlink. */
  readlinkat(dirFd: number, name: string | Buffer): Buffer;
  /** The names in a directory fd (not . and ..), raw bytes, in readdir order. */
  readDirFd(dirFd: number): Buffer[];
  fgetxattr(fd: number, name: string): Buffer | null;
  flistxattr(fd: number): string[];
  /** The xattrs of `name` itself (not followed), for entries that are never opened. */
  lgetxattrAt(dirFd: number, name: string | Buffer, attr: string): Buffer | null;
  llistxattrAt(dirFd: number, name: string | Buffer): string[];
  close(fd: number): void;

  // Starting a process without libuv's fork (a copy of this process's page tables, 8-18 ms).

  /**
   * posix_spawn `path` (argv[0] = path) in a new session: fds 0-2 from `stdio`, fd 3 one end of a
   * new Unix socket pair, signals at their defaults, none blocked, no environment. `input` is sent
   * on the pair at once and this side's writing shut down (the child reads it to EOF). Returns the
   * pid and this side's end of the pair (close-on-exec), left to be read. A failed exec is thrown
   * (code ENOENT, ...).
   */
  spawnSession(path: string, args: readonly string[], stdio: readonly [number, number, number], input: Buffer): [number, number];
  /** Reap a child of spawnSession: its exit code, 128+N when killed by signal N. */
  waitExit(pid: number): Promise<number>;
  /** _exit(2): the process ends now, without Node's teardown (see cli/main.ts runAndExit). */
  exitNow(code: number): never;
  /** mallopt(M_MMAP_THRESHOLD): glibc stops raising it (and its trim threshold) as large blocks are freed. */
  fixMmapThreshold(bytes: number): void;
  /** The hex SHA-256 of bytes in memory, by the OpenSSL inside Node, without loading node:crypto. */
  sha256(bytes: Buffer): string;

  // zstd decompression on a thread of the addon (native/zstd-thread.c; io/zstd.ts drives it).

  /** Start a decoder thread; events reach `onEvent` on this thread, in order. */
  zstdThreadOpen(windowLogMax: number, onEvent: ZstdThreadListener): ZstdThreadHandle;
  /** The next compressed bytes (not empty); the decoder holds the Buffer until its 'consumed' event. */
  zstdThreadInput(handle: ZstdThreadHandle, chunk: Buffer): void;
  /** An empty Buffer to decode into, held until an 'output' event hands it back filled. */
  zstdThreadBuffer(handle: ZstdThreadHandle, buffer: Buffer): void;
  /** No more input: an 'ended' event follows once all of it is decoded. */
  zstdThreadEnd(handle: ZstdThreadHandle): void;
  /** Stop and join the thread, release its buffers; no event after those already queued. Idempotent. */
  zstdThreadClose(handle: ZstdThreadHandle): void;
  /** Decoder threads opened and not yet closed (joined) in this process. */
  zstdThreadsOpen(): number;
}

/** A decoder thread of the addon (an opaque external). */
export type ZstdThreadHandle = { readonly zstdThread: unique symbol };

export const ZSTD_THREAD_OUTPUT = 0;
export const ZSTD_THREAD_CONSUMED = 1;
export const ZSTD_THREAD_ENDED = 2;
export const ZSTD_THREAD_ERROR = 3;

/**
 * An event of a decoder thread: an output buffer filled up to `length`, an input chunk consumed,
 * the end of all input (with whether it stopped inside a frame), or zstd's error name.
 */
export type ZstdThreadListener = (kind: number, buffer: Buffer | undefined, length: number, framesEnded: number, inFrame: boolean, message: string | undefined) => void;

/** struct stat as the native calls return it; ids as bigint so none is rounded. */
export interface FdStat {
  /** Type and permission bits (S_IFMT | 07777). */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  dev: bigint;
  ino: bigint;
  rdev: bigint;
  rdevMajor: number;
  rdevMinor: number;
  mtimeSec: number;
  mtimeNsec: number;
}

export const AT_FDCWD = -100;
/** openat2 resolve flags (linux/openat2.h). */
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;
export const RESOLVE_IN_ROOT = 0x10;

export type FdFileType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export function fileTypeOf(st: FdStat): FdFileType {
  switch (st.mode & 0o170000) {
    case 0o100000: return 'file';
    case 0o040000: return 'dir';
    case 0o120000: return 'symlink';
    case 0o020000: return 'char';
    case 0o060000: return 'block';
    case 0o010000: return 'fifo';
    default: return 'socket';
  }
}

/** Same inode? */
export function sameInode(a: FdStat, b: FdStat): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** The errno name of a native (or Node fs) error. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Why a native call failed, without the name it was given ("Permission denied"): callers name
 * the path as the container sees it, never a host path.
 */
export function errnoReason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const i = message.lastIndexOf(': ');
  return i < 0 ? message : message.slice(i + 2);
}

const readAsync = promisify(read);

/**
 * The bytes of an open fd from offset 0, up to `length` bytes (fewer at end of file), in chunks
 * of at most 1 MiB: through the thread pool, so a slow disk never blocks the event loop.
 */
export async function* readFd(fd: number, length: number): AsyncGenerator<Buffer> {
  let done = 0;
  while (done < length) {
    const buf = Buffer.allocUnsafe(Math.min(1 << 20, length - done));
    const { bytesRead } = await readAsync(fd, buf, 0, buf.length, done);
    if (bytesRead === 0) return;
    done += bytesRead;
    yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
  }
}

/**
 * readFd's synchronous sibling, for the small files a container start reads (a user database,
 * at most a few MiB): each thread-pool round trip costs more than the read itself there.
 */
export function readFdSync(fd: number, length: number): Buffer {
  const chunks: Buffer[] = [];
  let done = 0;
  while (done < length) {
    const buf = Buffer.allocUnsafe(Math.min(64 * 1024, length - done));
    const n = readSync(fd, buf, 0, buf.length, done);
    if (n === 0) break;
    done += n;
    chunks.push(n === buf.length ? buf : buf.subarray(0, n));
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

let loaded: NativeFs | undefined;

/** The addon if some command loaded it already (loading it costs a start about 1 ms). */
export function loadedNativeFs(): NativeFs | undefined {
  return loaded;
}

/** Load the addon once (io/native-parts finds it: build/Release/, or extracted from the pack). */
export function nativeFs(): NativeFs {
  loaded ??= loadAddon('ferry_native.node') as NativeFs;
  return loaded;
}

/**
 * oci's digestOf, with sha256 done by the addon: for the small blobs a command reads back and
 * checks (a container start reads a manifest and a config), which need not load node:crypto.
 */
export function digestOfBuffer(bytes: Buffer, algorithm: DigestAlgorithm): Digest {
  return algorithm === 'sha256' ? sha256Digest(nativeFs().sha256(bytes)) : digestOf(bytes, algorithm);
}
