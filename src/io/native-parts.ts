import { closeSync, existsSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, realpathSync, renameSync, rmSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError, messageOf } from '../errors.js';
import { digestHex, digestOf } from '../oci/digest.js';
import { mountOf } from './mounts.js';

/**
 * Where ferry's native parts are: the files that must exist on disk to be executed or
 * dlopen'ed (the container launcher, ferry's addon, zstd's addon).
 *
 * From a source checkout they are node-gyp's build/Release/ outputs. In the packed executable
 * (`npm run pack`) they travel inside it as SEA assets and are extracted once, by hash, into a
 * root-only directory: /usr/local/lib/ferry/ (root), else the user's store root's native/. /tmp is
 * never used: hardened hosts mount it noexec. Every use first checks the file against the bytes
 * the executable carries, and every directory above it against being writable by another user; a
 * file that differs is extracted again from the executable, after those bytes are checked against
 * their hash. Synchronous: it runs where an addon is loaded (a
 * synchronous require) and where the launcher is spawned.
 */

export type NativePartName = 'ferry-launch' | 'ferry_native.node' | 'zstd.node';

export interface PackedPart {
  /** Hex sha256 of the file. */
  sha256: string;
  size: number;
}

/** What the packed executable says about itself (scripts/pack/pack.js writes it as an asset). */
export interface PackedBuild {
  ferryVersion: string;
  /** process.version of the Node it carries. */
  nodeVersion: string;
  /** linux-x64, linux-arm64 */
  platform: string;
  parts: Partial<Record<NativePartName, PackedPart>>;
  /** A part's bytes, from inside the executable. */
  read(name: NativePartName): Uint8Array;
  /** Where to extract, in order of preference (default: extractDirCandidates()). */
  extractDirs?: readonly string[];
}

let packed: PackedBuild | undefined;
/** The directory chosen for the extracted parts, once one was found usable. */
let extractDir: string | undefined;
/** Each part's bytes inside the executable, taken once (a view of the executable's own pages). */
const carried = new Map<NativePartName, Uint8Array>();

/** Called once by the packed executable's entry (src/cli/packed-main.ts), before anything else; undefined: back to the source checkout's parts. */
export function usePackedBuild(build: PackedBuild | undefined): void {
  packed = build;
  extractDir = undefined;
  carried.clear();
}

/** The packed executable's description, or undefined when ferry runs from a source checkout. */
export function packedBuild(): PackedBuild | undefined {
  return packed;
}

/** The package root: src/io/ and dist/io/ are both two levels below it. */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/**
 * How to run this same ferry as another process (a container's supervisor, a systemd unit):
 * the packed executable itself, or this Node with the checkout's bin/ferry.js.
 */
export function ferryCommand(): string[] {
  return packed !== undefined ? [process.execPath] : [process.execPath, join(packageRoot(), 'bin', 'ferry.js')];
}

/**
 * Where the packed executable extracts its parts, in order of preference: root's
 * /usr/local/lib/ferry (the store root's native/ when /usr is read-only), a user's
 * $XDG_DATA_HOME/ferry/native.
 */
export function extractDirCandidates(uid: number = process.getuid?.() ?? -1, env: NodeJS.ProcessEnv = process.env): string[] {
  if (uid === 0) return ['/usr/local/lib/ferry', '/var/lib/ferry/native'];
  const xdg = env.XDG_DATA_HOME !== undefined && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share');
  return [join(xdg, 'ferry', 'native')];
}

/**
 * Why `dir` may not hold code ferry runs as this user, or undefined when it may: every directory
 * from / down must be owned by root or this user and not writable by group or others (else
 * another user could swap a checked file before it is used), and its mount must allow exec.
 */
export function untrustedReason(dir: string, uid: number = process.getuid?.() ?? -1): string | undefined {
  const real = realpathSync(dir);
  const parts = real.split(sep).filter((p) => p !== '');
  let path: string = sep;
  for (let i = 0; i <= parts.length; i++) {
    const st = lstatSync(path);
    if (st.uid !== 0 && st.uid !== uid) return `${path} is owned by uid ${st.uid}`;
    if ((st.mode & 0o022) !== 0) return `${path} is writable by ${(st.mode & 0o002) !== 0 ? 'all users' : 'its group'} (mode ${(st.mode & 0o7777).toString(8)})`;
    if (i < parts.length) path = join(path, parts[i]!);
  }
  const mount = mountOf(real);
  if (mount?.options.includes('noexec') === true) return `${real} is on a noexec mount (${mount.mountPoint})`;
  return undefined;
}

/** The file's bytes, or undefined when it does not exist. */
function readIfExists(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** A root-only directory for the parts: the first candidate that can be made and is trusted. */
function chooseExtractDir(build: PackedBuild): string {
  if (extractDir !== undefined) return extractDir;
  const refused: string[] = [];
  for (const dir of build.extractDirs ?? extractDirCandidates()) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A read-only /usr or a missing home: the next candidate may do.
      if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM' || code === 'ENOENT' || code === 'ENOTDIR') {
        refused.push(`${dir}: ${messageOf(err)}`);
        continue;
      }
      throw err;
    }
    const why = untrustedReason(dir);
    if (why === undefined) {
      extractDir = dir;
      return dir;
    }
    refused.push(`${dir}: ${why}`);
  }
  throw new FerryError('UNSUPPORTED', `no directory to extract ferry's native parts into (${refused.join('; ')})`, {
    hint: 'ferry needs a directory owned by root, not writable by others, on a mount without noexec: /usr/local/lib/ferry (as root) or $XDG_DATA_HOME/ferry/native',
  });
}

function writeExecutable(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'wx', 0o700);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * The packed part `name` on disk, extracted when missing or different. A file equal to the bytes
 * in the executable is taken as it is (a byte comparison: no hashing on every start); those bytes
 * are checked against the recorded hash before they are written out.
 */
function extractedPart(build: PackedBuild, name: NativePartName): string {
  const want = build.parts[name];
  if (want === undefined) throw new FerryError('UNSUPPORTED', `this ferry executable carries no ${name}`, { hint: 'make the executable again with `npm run pack`' });
  const dir = join(chooseExtractDir(build), `sha256-${want.sha256}`);
  const path = join(dir, name);
  let bytes = carried.get(name);
  if (bytes === undefined) carried.set(name, (bytes = build.read(name)));
  const found = readIfExists(path);
  if (found?.equals(bytes) === true) return path;
  if (bytes.length !== want.size || digestHex(digestOf(bytes)) !== want.sha256) {
    throw new FerryError('DIGEST_MISMATCH', `${name} inside ${process.execPath} does not match its sha256 ${want.sha256}`, {
      hint: 'the executable is damaged: copy it again and check it with `ferry verify` or sha256sum',
    });
  }
  if (found !== undefined) process.stderr.write(`ferry: ${path} did not match its sha256; extracting it again\n`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeExecutable(path, bytes);
  if (readIfExists(path)?.equals(bytes) !== true) throw new FerryError('IO_ERROR', `extract ${path}: the file written does not read back as written`);
  return path;
}

/**
 * The path of native part `name`, checked before this use: extracted and verified in the packed
 * executable, node-gyp's output in a source checkout.
 */
export function nativePart(name: NativePartName): string {
  if (packed !== undefined) return extractedPart(packed, name);
  const path = join(packageRoot(), 'build', 'Release', name);
  // A checkout has no recorded hash to check its parts against: only whether they were built.
  if (!existsSync(path)) {
    throw new FerryError('UNSUPPORTED', `native part ${path} is missing: it was not built`, {
      hint: 'run `npm ci` (or `npm rebuild`) in the ferry package; it needs a C compiler, make and python3 for node-gyp',
    });
  }
  return path;
}

/** Load an N-API addon (ferry_native.node, zstd.node) from its checked path. */
export function loadAddon(name: NativePartName): unknown {
  const path = nativePart(name);
  const module = { exports: {} as unknown };
  try {
    process.dlopen(module, path);
  } catch (err) {
    throw new FerryError('UNSUPPORTED', `native part ${path} could not be loaded: ${messageOf(err)}`, {
      cause: err,
      hint: packed === undefined ? 'rebuild it for this Node version with `npm rebuild`' : 'run `ferry doctor`: the extract directory may be on a noexec mount',
    });
  }
  return module.exports;
}

/** What `ferry --version` prints. */
export function versionText(version: string): string {
  return packed === undefined ? version : `${version} (packed ${packed.platform}, Node.js ${packed.nodeVersion})`;
}
