import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  rmSync,
  statfsSync,
  symlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import type { Readable } from 'node:stream';
import { FerryError, isFerryError, messageOf } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { chain } from '../io/layer-forms.js';
import { nativeFs, type NativeFs } from '../io/native.js';
import { MeasureDigest } from '../io/verify-digest.js';
import type { TarTime } from '../io/tar-format.js';
import type { TarEntry } from '../io/tar-reader.js';
import { LayerTarReader } from './tar-reader.js';
import { TarSplitRecorder } from './tar-split.js';

/**
 * Unpack one layer tar into a directory in overlay form, safely against hostile input.
 *
 * Overlay form: a whiteout `.wh.NAME` becomes a 0:0 character device NAME, an opaque marker
 * `.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on its directory (`user.overlay.*`
 * when not root, for `userxattr` mounts). The result is a lowerdir for overlayfs.
 *
 * Safety (nothing is ever written outside `root`):
 * - names: leading `/` stripped, `.` dropped, any `..` rejects the layer; depth and length capped;
 *   names stay raw bytes (Buffers), `\` is an ordinary byte.
 * - parents: each component is lstat'ed inside the root and must be a real directory; a symlink
 *   (or any non-directory) as a parent rejects the layer; missing parents are created with the
 *   metadata of the same directory in the lower layers (so `a/.wh.x` alone keeps `/a`'s mode).
 * - the last component is never followed: files are created with O_EXCL|O_NOFOLLOW, links with
 *   link(2) (which does not follow), metadata with lchown / fchmod / utimensat(NOFOLLOW).
 * - hardlinks: the target must already exist in this layer and not be a directory; no header
 *   metadata is applied through a link (containerd CVE-2021-32760).
 * - entries are applied strictly one at a time into a private staging directory (no races).
 *   The filesystem calls are synchronous on purpose: each is one short syscall, and the thread
 *   pool hop of the async twins made unpacking several times slower than tar(1).
 * - chmod comes after chown (chown clears setuid/setgid); directory modes and times are applied
 *   at the end, children first, so a 0555 directory can still receive its children.
 * - xattrs: `trusted.overlay.*` and `user.overlay.*` are escaped to `*.overlay.overlay.*` as umoci
 *   does (a layer must not plant opaque/redirect/metacopy attributes the kernel obeys); other
 *   `trusted.*`, `security.selinux` and `system.nfs4_acl` are DROPPED with a warning.
 * - devices: major/minor above 2^32-1 reject the layer; when not root, devices are skipped with
 *   a warning (containerd's rootless behaviour). The runtime mounts the rootfs nodev anyway.
 * - times: atime = max(atime, mtime); out-of-range times (before 1970, after 2262) become the epoch.
 */

export interface UnpackOptions {
  /** Unpacked diff dirs of the layers below, top first: metadata source for implied parents. */
  lowerDirs?: readonly string[];
  /** Names the layer in errors and warnings. */
  what: string;
  /** Default: root when running as uid 0. Rootless skips devices and chown, uses user.overlay.*. */
  rootless?: boolean;
  onWarning?: (message: string) => void;
  /** Called with the bytes of tar read since the last call, after each entry and each piece of a file body (progress). */
  onBytes?: (bytes: number) => void;
  /** Record the tar's skeleton in this file (see tar-split.ts), so the tar can be given back byte for byte. */
  tarSplit?: string;
  /**
   * The stream verifies itself against this diffId (it fails at its end on a mismatch, as
   * Layer.tar() does): the bytes are not hashed a second time, and the result names it. The tar is
   * read to the end of the stream either way, so the failure reaches the unpack before it returns.
   */
  verifiedDiffId?: Digest;
}

export interface UnpackResult {
  /** sha256 of the tar bytes as read (to the end of the stream). */
  diffId: Digest;
  /** Bytes of the tar stream. */
  size: number;
  entries: number;
  warnings: string[];
  /** With `tarSplit`: whether the split was kept, or why the tar cannot be reproduced. */
  tarSplit?: { kept: true } | { kept: false; why: string };
}

/** Cap on path depth (node-tar CVE-2024-28863 is a deep-path DoS); real images stay far below. */
export const MAX_DEPTH = 256;
const MAX_COMPONENT = 255;
const PATH_MAX = 4096;
const MAX_WARNINGS = 200;
/** uid_t is 32 bits and chown(2) reads (uid_t)-1 as "leave unchanged": owners above this are refused. */
const MAX_OWNER_ID = 0xfffffffe;
/** Linux XATTR_NAME_MAX and XATTR_SIZE_MAX. */
const XATTR_NAME_MAX = 255;
const XATTR_SIZE_MAX = 65536;
/**
 * setxattr's ENOSPC means the inode's xattr space is full (one block on ext4) unless the
 * filesystem itself is nearly full: below this much free space it is reported as a full disk.
 */
const XATTR_ENOSPC_FREE = 16 * 1024 * 1024;
/** containerd's bound: times beyond what int64 nanoseconds can hold become the epoch. */
const MAX_TIME_SEC = 9_223_372_036;
const WHITEOUT_PREFIX = Buffer.from('.wh.');
const OPAQUE_MARKER = Buffer.from('.wh..wh..opq');
const META_PREFIX = Buffer.from('.wh..wh.');
const SLASH = 0x2f;

interface DirMeta {
  mode: number;
  uid: number | undefined;
  gid: number | undefined;
  atime: TarTime | undefined;
  mtime: TarTime | undefined;
}

interface LowerDirInfo {
  stat: Stats;
  path: Buffer;
}

function unsafe(what: string, name: Buffer, why: string): FerryError {
  return new FerryError('UNSAFE_PATH', `${what}: entry "${printable(name)}" refused: ${why}`, {
    hint: 'the layer tries to write outside its directory or through a link; it is rejected and nothing was kept',
  });
}

function invalidLayer(what: string, name: Buffer, why: string): FerryError {
  return new FerryError('INVALID_LAYER', `${what}: entry "${printable(name)}": ${why}`, {
    hint: 'the layer is damaged or was crafted to break unpackers; it is rejected and nothing was kept',
  });
}

/** A name for messages: UTF-8 where valid and free of control characters, bytes as \xNN elsewhere. */
export function printable(name: Buffer): string {
  const text = name.toString('utf8');
  if (!text.includes('\ufffd') && !/[\u0000-\u001f\u007f]/.test(text)) return text;
  return [...name].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}

function startsWith(buf: Buffer, prefix: Buffer): boolean {
  return buf.length >= prefix.length && buf.subarray(0, prefix.length).equals(prefix);
}

function splitName(name: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= name.length; i++) {
    if (i === name.length || name[i] === SLASH) {
      if (i > start) parts.push(name.subarray(start, i));
      start = i + 1;
    }
  }
  return parts;
}

/**
 * A tar name as clean components: all leading `/` stripped (CVE-2021-32804), `.` dropped, `..`
 * refused (no non-local names, whatever they would resolve to). Empty means the root itself.
 */
export function cleanName(name: Buffer, what: string): Buffer[] {
  const out: Buffer[] = [];
  for (const part of splitName(name)) {
    if (part.length === 1 && part[0] === 0x2e) continue;
    if (part.length === 2 && part[0] === 0x2e && part[1] === 0x2e) throw unsafe(what, name, 'the path contains ".."');
    if (part.length > MAX_COMPONENT) throw invalidLayer(what, name, `a path component is longer than ${MAX_COMPONENT} bytes`);
    out.push(part);
  }
  if (out.length > MAX_DEPTH) throw unsafe(what, name, `the path is deeper than ${MAX_DEPTH} components`);
  return out;
}

/** latin1 maps bytes 1:1, so this key is unique per byte string. */
function keyOf(parts: readonly Buffer[]): string {
  return parts.map((p) => p.toString('latin1')).join('/');
}

function boundTime(t: TarTime): TarTime {
  if (t.sec < 0 || t.sec > MAX_TIME_SEC) return { sec: 0, nsec: 0 };
  return t;
}

function laterTime(a: TarTime | undefined, b: TarTime): TarTime {
  if (a === undefined) return b;
  return a.sec > b.sec || (a.sec === b.sec && a.nsec > b.nsec) ? a : b;
}

type XattrPlan = { set: string } | { drop: string };

/** What to do with an xattr from a layer (see the module comment for why). */
export function xattrPlan(name: string): XattrPlan {
  if (name.startsWith('trusted.overlay.')) return { set: `trusted.overlay.overlay.${name.slice('trusted.overlay.'.length)}` };
  if (name.startsWith('user.overlay.')) return { set: `user.overlay.overlay.${name.slice('user.overlay.'.length)}` };
  if (name.startsWith('trusted.')) return { drop: 'trusted.* attributes are for the host kernel and root daemons, not images' };
  if (name === 'security.selinux') return { drop: 'SELinux labels belong to the host policy' };
  if (name === 'system.nfs4_acl') return { drop: 'NFSv4 ACLs cannot be set on a local filesystem' };
  if (name.startsWith('user.') || name.startsWith('security.') || name === 'system.posix_acl_access' || name === 'system.posix_acl_default') {
    return { set: name };
  }
  return { drop: 'unknown xattr namespace' };
}

/**
 * The reverse of xattrPlan, for writing a layer back from a directory (commit, export): overlay
 * control attributes (opaque, origin, redirect...) are not image data and give undefined; escaped
 * image attributes `*.overlay.overlay.X` become `*.overlay.X` again.
 */
export function xattrForLayer(name: string): string | undefined {
  for (const ns of ['trusted.overlay.', 'user.overlay.']) {
    if (name.startsWith(`${ns}overlay.`)) return `${ns}${name.slice(ns.length + 'overlay.'.length)}`;
    if (name.startsWith(ns)) return undefined;
  }
  return name;
}

/** Is this lower-layer xattr one the kernel interprets for overlay (not image data)? */
function isOverlayControlXattr(name: string): boolean {
  for (const ns of ['trusted.overlay.', 'user.overlay.']) {
    if (name.startsWith(ns) && !name.startsWith(`${ns}overlay.`)) return true;
  }
  return false;
}

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/** Without an exception for ENOENT: most entries are new, and building the error cost more than the lstat. */
function lstatOrUndefined(path: Buffer): Stats | undefined {
  return lstatSync(path, { throwIfNoEntry: false });
}

class Unpacker {
  private readonly root: Buffer;
  private readonly lowers: Buffer[];
  private readonly what: string;
  private readonly rootless: boolean;
  private readonly native: NativeFs;
  private readonly onWarning: ((message: string) => void) | undefined;
  private readonly opaqueXattr: string;
  readonly warnings: string[] = [];
  /** Directories of this layer, with the metadata to apply at the end. */
  private readonly dirs = new Map<string, DirMeta>();
  /** Whiteout devices this layer created (keys), to drop them under a later opaque marker. */
  private readonly whiteouts = new Set<string>();
  /** Directories this layer made opaque. */
  private readonly opaque = new Set<string>();
  /**
   * Paths known to be real directories (keys). Every replacement goes through remove(), which
   * forgets the path and all below it, so a directory later replaced by a symlink is never trusted
   * from here (node-tar CVE-2021-32803 was a cache that missed exactly that).
   */
  private readonly knownDirs = new Set<string>();
  private warnedChown = false;
  private readonly split: TarSplitRecorder | undefined;

  /** Reports the bytes read so far (progress), during long file bodies too. */
  private readonly progress: (() => void) | undefined;

  constructor(root: string, options: UnpackOptions, split?: TarSplitRecorder, progress?: () => void) {
    this.split = split;
    this.progress = progress;
    this.root = Buffer.from(root);
    this.lowers = (options.lowerDirs ?? []).map((d) => Buffer.from(d));
    this.what = options.what;
    this.rootless = options.rootless ?? (typeof process.getuid === 'function' && process.getuid() !== 0);
    this.native = nativeFs();
    this.onWarning = options.onWarning;
    this.opaqueXattr = this.rootless ? 'user.overlay.opaque' : 'trusted.overlay.opaque';
  }

  private warn(message: string): void {
    if (this.warnings.length < MAX_WARNINGS) this.warnings.push(message);
    this.onWarning?.(message);
  }

  private abs(parts: readonly Buffer[], base: Buffer = this.root): Buffer {
    const pieces: Buffer[] = [base];
    for (const p of parts) pieces.push(Buffer.from('/'), p);
    const out = Buffer.concat(pieces);
    if (out.length >= PATH_MAX) throw invalidLayer(this.what, Buffer.concat(pieces.slice(1)), `the path is longer than ${PATH_MAX} bytes`);
    return out;
  }

  async apply(entry: TarEntry, reader: LayerTarReader): Promise<void> {
    const parts = cleanName(entry.name, this.what);
    if (entry.uid > MAX_OWNER_ID || entry.gid > MAX_OWNER_ID) {
      throw invalidLayer(this.what, entry.name, `owner ${entry.uid}:${entry.gid} is out of range (uid and gid are at most ${MAX_OWNER_ID})`);
    }
    if (parts.length === 0) {
      // The layer's root: metadata only; its type can never change (umoci).
      if (entry.type !== 'dir') throw unsafe(this.what, entry.name, `the root of the layer cannot become a ${entry.type}`);
      this.recordDir('', entry);
      return;
    }
    const base = parts[parts.length - 1]!;
    const metaIndex = parts.findIndex((p) => startsWith(p, META_PREFIX));
    if (metaIndex === parts.length - 1 && base.equals(OPAQUE_MARKER)) {
      await this.opaqueMarker(parts.slice(0, -1), entry);
      return;
    }
    if (metaIndex !== -1) {
      // aufs metadata (.wh..wh.plnk, .wh..wh.aufs and what is below them): docker skips it too.
      this.warn(`${this.what}: skipped aufs metadata entry "${printable(entry.name)}"`);
      return;
    }
    if (startsWith(base, WHITEOUT_PREFIX)) {
      await this.whiteout(parts, base.subarray(WHITEOUT_PREFIX.length), entry);
      return;
    }
    await this.ensureParents(parts, entry.name);
    const path = this.abs(parts);
    const key = keyOf(parts);
    if (entry.type === 'hardlink') {
      await this.hardlink(parts, path, key, entry);
      return;
    }
    const existing = lstatOrUndefined(path);
    if (existing !== undefined && !(entry.type === 'dir' && existing.isDirectory())) {
      await this.remove(path, key);
    }
    switch (entry.type) {
      case 'dir':
        if (existing === undefined || !existing.isDirectory()) mkdirSync(path, 0o700);
        this.setXattrs(path, entry, false);
        this.recordDir(key, entry);
        return;
      case 'file':
        await this.file(path, key, entry, reader);
        return;
      case 'symlink':
        if (entry.linkname.length === 0) throw invalidLayer(this.what, entry.name, 'symlink with an empty target');
        // The target is stored verbatim: absolute targets are legitimate inside the container;
        // nothing here ever follows it.
        symlinkSync(entry.linkname, path);
        this.chown(path, entry);
        this.setXattrs(path, entry, true);
        this.times(path, entry);
        return;
      case 'char':
      case 'block':
      case 'fifo':
        await this.special(path, entry);
        return;
      default:
        throw invalidLayer(this.what, entry.name, `unexpected entry type ${entry.type}`);
    }
  }

  private recordDir(key: string, entry: TarEntry): void {
    this.dirs.set(key, { mode: entry.mode, uid: entry.uid, gid: entry.gid, atime: entry.atime, mtime: entry.mtime });
  }

  /** Walk the parents of `parts` inside the root, never through a symlink; create missing ones. */
  private async ensureParents(parts: readonly Buffer[], name: Buffer): Promise<void> {
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i);
      const key = keyOf(prefix);
      if (this.knownDirs.has(key)) continue;
      const path = this.abs(prefix);
      const st = lstatOrUndefined(path);
      if (st === undefined) {
        await this.impliedDir(prefix, path);
        this.knownDirs.add(key);
      } else if (st.isDirectory()) {
        this.knownDirs.add(key);
      } else {
        const kind = st.isSymbolicLink() ? 'a symlink' : 'not a directory';
        throw unsafe(this.what, name, `its parent "${printable(Buffer.concat(prefix.flatMap((p, j) => (j ? [Buffer.from('/'), p] : [p]))))}" is ${kind}`);
      }
    }
  }

  /** A parent the tar did not list: same metadata as in the lower layers, else 0755 root. */
  private async impliedDir(prefix: readonly Buffer[], path: Buffer): Promise<void> {
    mkdirSync(path, 0o700);
    const key = keyOf(prefix);
    const lower = await this.lowerDir(prefix);
    if (lower === undefined) {
      this.dirs.set(key, { mode: 0o755, uid: 0, gid: 0, atime: undefined, mtime: undefined });
      return;
    }
    const st = lower.stat;
    const toTime = (ms: bigint | number): TarTime => {
      const ns = BigInt(ms);
      return { sec: Number(ns / 1_000_000_000n), nsec: Number(ns % 1_000_000_000n) };
    };
    const big = lstatSync(lower.path, { bigint: true });
    this.dirs.set(key, {
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      atime: toTime(big.atimeNs),
      mtime: toTime(big.mtimeNs),
    });
    // Copy the lower dir's xattrs (ACLs, capabilities of the image) but not overlay control ones.
    for (const name of this.native.llistxattr(lower.path)) {
      if (isOverlayControlXattr(name)) continue;
      const value = this.native.lgetxattr(lower.path, name);
      if (value !== null) this.trySetXattr(path, name, value, Buffer.concat(prefix.flatMap((p, j) => (j ? [Buffer.from('/'), p] : [p]))));
    }
  }

  /** The directory at `prefix` as the layers below show it, or undefined. */
  private async lowerDir(prefix: readonly Buffer[]): Promise<LowerDirInfo | undefined> {
    for (const lower of this.lowers) {
      let path = lower;
      let hidden = false;
      let complete = true;
      for (const part of prefix) {
        path = Buffer.concat([path, Buffer.from('/'), part]);
        const st = lstatOrUndefined(path);
        if (st === undefined) {
          complete = false;
          break;
        }
        // A whiteout or a non-directory in a higher layer hides everything below it.
        if (!st.isDirectory()) return undefined;
        if (this.native.lgetxattr(path, this.opaqueXattr)?.toString() === 'y') hidden = true;
      }
      if (complete) return { stat: lstatSync(path), path };
      if (hidden) return undefined;
    }
    return undefined;
  }

  /** Remove what is at `path` (this layer's), and forget metadata recorded under it. */
  private async remove(path: Buffer, key: string): Promise<void> {
    this.split?.removed(key);
    rmSync(path, { recursive: true, force: true });
    const prefix = `${key}/`;
    for (const k of [...this.dirs.keys()]) if (k === key || k.startsWith(prefix)) this.dirs.delete(k);
    for (const k of [...this.whiteouts]) if (k === key || k.startsWith(prefix)) this.whiteouts.delete(k);
    for (const k of [...this.opaque]) if (k === key || k.startsWith(prefix)) this.opaque.delete(k);
    for (const k of [...this.knownDirs]) if (k === key || k.startsWith(prefix)) this.knownDirs.delete(k);
  }

  private async opaqueMarker(dirParts: Buffer[], entry: TarEntry): Promise<void> {
    const key = keyOf(dirParts);
    if (dirParts.length > 0) {
      await this.ensureParents([...dirParts, OPAQUE_MARKER], entry.name);
    }
    const dir = this.abs(dirParts);
    this.native.lsetxattr(dir, this.opaqueXattr, Buffer.from('y'));
    this.opaque.add(key);
    // Opaque already hides every lower entry: whiteouts this layer made in it are redundant.
    const prefix = key === '' ? '' : `${key}/`;
    for (const k of [...this.whiteouts]) {
      const rest = k.slice(prefix.length);
      if (k.startsWith(prefix) && !rest.includes('/')) {
        rmSync(this.abs(k.split('/').map((p) => Buffer.from(p, 'latin1'))), { force: true });
        this.whiteouts.delete(k);
      }
    }
  }

  private async whiteout(parts: Buffer[], target: Buffer, entry: TarEntry): Promise<void> {
    if (target.length === 0 || target.equals(Buffer.from('.')) || target.equals(Buffer.from('..'))) {
      throw unsafe(this.what, entry.name, 'a whiteout must name a file');
    }
    const dirParts = parts.slice(0, -1);
    const targetParts = [...dirParts, target];
    await this.ensureParents(targetParts, entry.name);
    // Inside a directory this layer made opaque, lower entries are hidden already.
    if (this.opaque.has(keyOf(dirParts))) return;
    const path = this.abs(targetParts);
    // A whiteout applies only to lower layers: an entry this layer made stays.
    if ((lstatOrUndefined(path)) !== undefined) return;
    this.native.mknod(path, fsConstants.S_IFCHR, 0, 0);
    this.whiteouts.add(keyOf(targetParts));
  }

  private async file(path: Buffer, key: string, entry: TarEntry, reader: LayerTarReader): Promise<void> {
    const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
    const fd = openSync(path, flags, 0o600);
    // The body goes to this file, not into the split (empty files need no reference).
    if (entry.size > 0) this.split?.file(key, entry.size);
    let written = 0;
    try {
      for await (const chunk of reader.body()) {
        let offset = 0;
        while (offset < chunk.length) offset += writeSync(fd, chunk, offset, chunk.length - offset);
        written += chunk.length;
        this.progress?.();
      }
      if (written !== entry.size) throw invalidLayer(this.what, entry.name, `wrote ${written} of ${entry.size} bytes`);
      if (this.rootless) this.skipChown();
      else fchownSync(fd, entry.uid, entry.gid);
      this.setXattrs(path, entry, false);
      // After chown, which clears setuid/setgid (and file capabilities: xattrs go in between).
      fchmodSync(fd, entry.mode);
      this.times(path, entry, fd);
    } finally {
      closeSync(fd);
    }
  }

  private async special(path: Buffer, entry: TarEntry): Promise<void> {
    if (entry.type === 'fifo') {
      this.native.mknod(path, fsConstants.S_IFIFO | 0o600, 0, 0);
    } else {
      if (entry.devmajor > 0xffffffff || entry.devminor > 0xffffffff) {
        throw invalidLayer(this.what, entry.name, `device number ${entry.devmajor}:${entry.devminor} is out of range`);
      }
      if (this.rootless) {
        this.warn(`${this.what}: skipped device "${printable(entry.name)}" (${entry.devmajor}:${entry.devminor}): creating devices needs root`);
        return;
      }
      const type = entry.type === 'char' ? fsConstants.S_IFCHR : fsConstants.S_IFBLK;
      this.native.mknod(path, type | 0o600, entry.devmajor, entry.devminor);
    }
    this.chown(path, entry);
    this.setXattrs(path, entry, false);
    // mknod just made this node in the private staging dir: chmod by path reaches it, not a link.
    chmodSync(path, entry.mode);
    this.times(path, entry);
  }

  private async hardlink(parts: Buffer[], path: Buffer, key: string, entry: TarEntry): Promise<void> {
    // Targets are names in the same archive: a leading `/` (kaniko writes them) is stripped, `..` refused.
    const targetParts = cleanName(entry.linkname, this.what);
    if (targetParts.length === 0) throw unsafe(this.what, entry.name, 'a hardlink to the layer root');
    const targetKey = keyOf(targetParts);
    if (targetKey === key) throw invalidLayer(this.what, entry.name, 'a hardlink to itself');
    let missing = false;
    for (let i = 1; i < targetParts.length && !missing; i++) {
      const st = lstatOrUndefined(this.abs(targetParts.slice(0, i)));
      if (st === undefined) missing = true;
      else if (!st.isDirectory()) throw unsafe(this.what, entry.name, `hardlink target "${printable(entry.linkname)}" goes through a symlink or file`);
    }
    const target = this.abs(targetParts);
    const st = missing ? undefined : lstatOrUndefined(target);
    if (st === undefined || this.whiteouts.has(targetKey)) {
      throw new FerryError('INVALID_LAYER', `${this.what}: hardlink "${printable(entry.name)}" -> "${printable(entry.linkname)}": the target is not in this layer (yet)`, {
        hint: 'a hardlink must follow its target in the same layer; links to lower layers are not supported',
      });
    }
    if (st.isDirectory()) throw unsafe(this.what, entry.name, 'a hardlink to a directory');
    const existing = lstatOrUndefined(path);
    if (existing !== undefined) await this.remove(path, key);
    // link(2) links a symlink itself, never what it points to; no metadata is applied through it.
    linkSync(target, path);
  }

  private chown(path: Buffer, entry: TarEntry): void {
    if (this.rootless) return this.skipChown();
    lchownSync(path, entry.uid, entry.gid);
  }

  private skipChown(): void {
    if (this.warnedChown) return;
    this.warnedChown = true;
    this.warn(`${this.what}: not root: files are owned by the unpacking user, not the image's owners`);
  }

  private setXattrs(path: Buffer, entry: TarEntry, isSymlink: boolean): void {
    for (const [name, value] of entry.xattrs) {
      // What the kernel would refuse is refused here, naming the entry (not a raw errno on a staging path).
      const nameBytes = Buffer.byteLength(name);
      if (nameBytes === 0 || nameBytes > XATTR_NAME_MAX || name.includes('\u0000')) {
        throw invalidLayer(this.what, entry.name, `xattr name "${printable(Buffer.from(name))}" is not 1..${XATTR_NAME_MAX} bytes without NUL`);
      }
      if (value.length > XATTR_SIZE_MAX) {
        throw invalidLayer(this.what, entry.name, `xattr ${name} has ${value.length} bytes, over the ${XATTR_SIZE_MAX}-byte limit`);
      }
      const plan = xattrPlan(name);
      if ('drop' in plan) {
        this.warn(`${this.what}: dropped xattr ${name} on "${printable(entry.name)}": ${plan.drop}`);
        continue;
      }
      if (isSymlink && plan.set.startsWith('user.')) {
        this.warn(`${this.what}: dropped xattr ${name} on symlink "${printable(entry.name)}": Linux has no user.* xattrs on symlinks`);
        continue;
      }
      this.trySetXattr(path, plan.set, value, entry.name);
    }
  }

  /**
   * A filesystem may lack xattr support; that loses data, so it is a warning, not silence. An
   * entry whose xattrs do not fit on one inode is the layer's fault, not a full disk.
   */
  private trySetXattr(path: Buffer, name: string, value: Buffer, entryName: Buffer): void {
    try {
      this.native.lsetxattr(path, name, value);
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'EOPNOTSUPP' || code === 'EPERM' || code === 'ENOTSUP') {
        this.warn(`${this.what}: could not set xattr ${name} on "${printable(entryName)}": ${code}`);
        return;
      }
      if (code === 'E2BIG' || code === 'ERANGE' || (code === 'ENOSPC' && this.freeBytes() >= XATTR_ENOSPC_FREE)) {
        throw new FerryError('INVALID_LAYER', `${this.what}: entry "${printable(entryName)}": its xattrs do not fit on one inode of the store's filesystem (setting ${name}: ${code})`, {
          hint: 'the layer carries more extended attributes on one file than the filesystem can hold; it is rejected and nothing was kept',
        });
      }
      throw err;
    }
  }

  private freeBytes(): number {
    const st = statfsSync(this.root);
    return st.bavail * st.bsize;
  }

  /**
   * With the file's fd and whole-second times (nearly every tar entry), futimens on the fd: no
   * path lookup. Node's futimes takes seconds as a double, exact only for whole seconds.
   */
  private times(path: Buffer, given: { atime?: TarTime | undefined; mtime: TarTime }, fd?: number): void {
    const mtime = boundTime(given.mtime);
    const atime = boundTime(laterTime(given.atime, given.mtime));
    if (fd !== undefined && atime.nsec === 0 && mtime.nsec === 0) futimesSync(fd, atime.sec, mtime.sec);
    else this.native.lutimes(path, atime.sec, atime.nsec, mtime.sec, mtime.nsec);
  }

  /**
   * Overlay shows the topmost layer's root directory, so a layer without a `./` entry inherits the
   * root metadata of the layer below (else a base layer's 0700 root would turn 0755).
   */
  inheritRoot(): void {
    const lower = this.lowers[0];
    if (lower === undefined) return;
    const st = lstatSync(lower, { bigint: true });
    const time = (ns: bigint): TarTime => ({ sec: Number(ns / 1_000_000_000n), nsec: Number(ns % 1_000_000_000n) });
    this.dirs.set('', { mode: Number(st.mode) & 0o7777, uid: Number(st.uid), gid: Number(st.gid), atime: time(st.atimeNs), mtime: time(st.mtimeNs) });
  }

  /** Directory owners, modes and times, deepest first, once every entry is in. */
  async finish(): Promise<void> {
    const keys = [...this.dirs.keys()].sort((a, b) => depth(b) - depth(a));
    for (const key of keys) {
      const meta = this.dirs.get(key)!;
      const path = key === '' ? this.root : this.abs(key.split('/').map((p) => Buffer.from(p, 'latin1')));
      // O_NOFOLLOW|O_DIRECTORY: whatever happened, this only ever touches a real directory.
      const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
      try {
        if (meta.uid !== undefined && meta.gid !== undefined) {
          if (this.rootless) this.skipChown();
          else fchownSync(fd, meta.uid, meta.gid);
        }
        fchmodSync(fd, meta.mode);
        if (meta.mtime !== undefined) this.times(path, { atime: meta.atime, mtime: meta.mtime }, fd);
      } finally {
        closeSync(fd);
      }
    }
  }
}

function depth(key: string): number {
  if (key === '') return 0;
  let n = 1;
  for (let i = 0; i < key.length; i++) if (key.charCodeAt(i) === SLASH) n++;
  return n;
}

/**
 * Unpack the tar stream into `root` (an existing, empty, private directory). Computes the
 * diffId over every byte of the stream; the caller compares it before committing the result.
 * On error the caller removes `root`: a half-unpacked layer is never used.
 */
export async function unpackLayerTar(tar: Readable, root: string, options: UnpackOptions): Promise<UnpackResult> {
  const measure = options.verifiedDiffId === undefined ? new MeasureDigest() : undefined;
  const split = options.tarSplit === undefined ? undefined : new TarSplitRecorder(options.tarSplit);
  // Each stage between the stream and the reader is a hop for every chunk: none unless needed.
  const reader = new LayerTarReader(measure === undefined ? tar : chain(tar, measure), options.what, split?.skeleton);
  const onBytes = options.onBytes;
  let reported = 0;
  const progress =
    onBytes === undefined
      ? undefined
      : (): void => {
          const at = reader.offset;
          if (at > reported) onBytes(at - reported);
          reported = at;
        };
  const unpacker = new Unpacker(root, options, split, progress);
  let entries = 0;
  let current: TarEntry | undefined;
  try {
    unpacker.inheritRoot();
    for (;;) {
      current = await reader.next();
      if (current === undefined) break;
      entries++;
      await unpacker.apply(current, reader);
      progress?.();
    }
    progress?.();
    await unpacker.finish();
  } catch (err) {
    await reader.close();
    await split?.abort();
    throw wrapError(err, options.what, current, root);
  }
  // The strict end read the stream to its end: the reader's offset is every byte of it.
  const result: UnpackResult =
    measure === undefined
      ? { diffId: options.verifiedDiffId!, size: reader.offset, entries, warnings: unpacker.warnings }
      : { diffId: measure.digest, size: measure.size, entries, warnings: unpacker.warnings };
  if (split !== undefined) {
    try {
      result.tarSplit = await split.finish(result.size);
    } catch (err) {
      throw wrapError(err, options.what, undefined, root);
    }
  }
  return result;
}

function wrapError(err: unknown, what: string, entry: TarEntry | undefined, root: string): unknown {
  if (isFerryError(err)) return err;
  const code = errnoOf(err);
  const where = entry === undefined ? '' : ` at entry "${printable(entry.name)}"`;
  if (entry !== undefined && code !== undefined && /^ERR_(INVALID_ARG|OUT_OF_RANGE)/.test(code)) {
    // Node refused a value the entry carries (checks above should have caught it first): the
    // layer's fault. Not chained: Node's message would show the staging path.
    return new FerryError('INVALID_LAYER', `${what}: entry "${printable(entry.name)}": ${messageOf(err).split(root).join('')}`, {
      hint: 'a value in this entry cannot be applied on this system; the layer is rejected and nothing was kept',
    });
  }
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new FerryError('NO_SPACE', `${what}: unpack${where}: no space left on the store's filesystem`, {
      cause: err,
      hint: 'free space (ferry prune removes unreferenced layers) or use a store on a larger filesystem (--root)',
    });
  }
  return new FerryError('IO_ERROR', `${what}: unpack${where}: ${messageOf(err)}`, { cause: err });
}
