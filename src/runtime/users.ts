import { FerryError } from '../errors.js';
import {
  errnoCode,
  errnoReason,
  fileTypeOf,
  nativeFs,
  readFdSync,
  RESOLVE_BENEATH,
  RESOLVE_IN_ROOT,
  RESOLVE_NO_MAGICLINKS,
  RESOLVE_NO_SYMLINKS,
} from '../io/native.js';
import { lookupLayered } from './layered-fs.js';
import { isAlive } from './state.js';

/**
 * Users and groups as a container engine resolves them: from the IMAGE's /etc/passwd and
 * /etc/group (never the host's, and never through NSS: docker cp CVE-2019-14271 loaded the
 * container's libnss as root). The rules are runc's libcontainer/user GetExecUser:
 * - "" is uid 0; "name" must be in passwd; a number not in passwd is that uid with gid 0;
 * - "user:group": the group by name or number; an explicit group means no supplementary groups;
 * - otherwise the supplementary groups are those of /etc/group that list the user's name.
 * Ids above 2^31-1 are refused (containerd CVE-2024-40635: they wrapped to root).
 */
export interface ExecUser {
  uid: number;
  gid: number;
  /** Supplementary groups (setgroups). */
  groups: number[];
  /** From passwd; "/" when the user has no entry. */
  home: string;
  /** The passwd name, when the user has an entry. */
  name: string | undefined;
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export const MAX_ID = 2 ** 31 - 1;

function parseId(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : Number.MAX_SAFE_INTEGER;
}

/** passwd lines `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped, as libc does. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const uid = parseId(f[2] ?? '');
    const gid = parseId(f[3] ?? '');
    if (f.length < 4 || f[0] === '' || uid === undefined || gid === undefined) continue;
    out.push({ name: f[0]!, uid, gid, home: f[5] ?? '' });
  }
  return out;
}

/** group lines `name:password:gid:member,member`. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const gid = parseId(f[2] ?? '');
    if (f.length < 3 || f[0] === '' || gid === undefined) continue;
    out.push({ name: f[0]!, gid, members: (f[3] ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '') });
  }
  return out;
}

function checkRange(id: number, what: string, spec: string): number {
  if (id > MAX_ID) {
    throw new FerryError('USAGE', `user ${spec}: ${what} ${id} is out of range (at most ${MAX_ID})`, {
      hint: 'ids above 2^31-1 are refused: they have been used to wrap around to root',
    });
  }
  return id;
}

/**
 * Resolve `spec` ("", "name", "uid", "name:group", "uid:gid", ...) against the image's passwd
 * and group files (undefined when the image has none).
 */
export function resolveUser(spec: string, passwdText: string | undefined, groupText: string | undefined, where = 'the image'): ExecUser {
  const colon = spec.indexOf(':');
  const userArg = colon < 0 ? spec : spec.slice(0, colon);
  const groupArg = colon < 0 ? '' : spec.slice(colon + 1);
  const uidArg = parseId(userArg);
  const gidArg = parseId(groupArg);
  const users = passwdText === undefined ? [] : parsePasswd(passwdText);
  const groups = groupText === undefined ? [] : parseGroup(groupText);

  const user: ExecUser = { uid: 0, gid: 0, groups: [], home: '/', name: undefined };
  const match = users.find((u) => (userArg === '' ? u.uid === 0 : uidArg !== undefined ? u.uid === uidArg : u.name === userArg));
  if (match !== undefined) {
    user.uid = checkRange(match.uid, 'uid', spec);
    user.gid = checkRange(match.gid, 'gid', spec);
    user.home = match.home === '' ? '/' : match.home;
    user.name = match.name;
  } else if (userArg !== '') {
    if (uidArg === undefined) {
      throw new FerryError('NOT_FOUND', `user ${userArg}: no such user in ${where}'s /etc/passwd`, {
        hint: passwdText === undefined ? 'the image has no /etc/passwd: give a numeric uid (-u 1000:1000)' : 'give a user the image knows, or a numeric uid',
      });
    }
    user.uid = checkRange(uidArg, 'uid', spec);
  }

  if (groupArg !== '') {
    const g = groups.find((e) => (gidArg !== undefined ? e.gid === gidArg : e.name === groupArg));
    if (g !== undefined) user.gid = checkRange(g.gid, 'gid', spec);
    else if (gidArg !== undefined) user.gid = checkRange(gidArg, 'gid', spec);
    else {
      throw new FerryError('NOT_FOUND', `group ${groupArg}: no such group in ${where}'s /etc/group`, {
        hint: 'give a group the image knows, or a numeric gid',
      });
    }
  } else if (user.name !== undefined) {
    const name = user.name;
    user.groups = groups.filter((g) => g.members.includes(name)).map((g) => checkRange(g.gid, 'gid', spec));
  }
  return user;
}

// ---------------------------------------------------------------------------------------------
// Reading /etc/passwd and /etc/group without trusting the tree they are in (issue 10, item 5):
// a running container can swap a FIFO in (the read would hang) or a parent directory for a
// symlink to a host directory between a check and an open by path. So the file is resolved from
// a directory fd of the root, never following a link out of it, opened as an O_PATH fd, read
// only when fstat shows a regular file (through that fd: devices and FIFOs are never opened),
// non-blocking, and at most USER_FILE_MAX_BYTES.

/** The most of /etc/passwd or /etc/group read (glibc has no limit; 4 MiB is ~50 000 users). */
export const USER_FILE_MAX_BYTES = 4 << 20;
const MAX_SYMLINKS = 40;

/** How symlinks met on the way are treated. */
export type SymlinkRule =
  /** Resolved as the container would, inside the root ("/" and ".." stop at the root). */
  | 'in-root'
  /** Not followed at all: the path is taken as absent (a path already resolved elsewhere). */
  | 'refuse';

export interface ReadInRootOptions {
  symlinks?: SymlinkRule;
  maxBytes?: number;
  /** Use openat2 when the kernel has it (default); false: always the component walk (tests). */
  openat2?: boolean;
  /** For messages: "container web", "image redis:7". */
  where?: string;
}

function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}

function resolveError(where: string, path: string, err: unknown): FerryError {
  return new FerryError('IO_ERROR', `read ${path} in ${where}: ${errnoReason(err)}`, { cause: err });
}

/**
 * The fallback for kernels without openat2 (and what openat2 does with RESOLVE_IN_ROOT): walk
 * `path` one component at a time from `rootFd`, entering directories with O_NOFOLLOW|O_DIRECTORY
 * and resolving symlinks ourselves, their targets again from the root. An O_PATH fd of the last
 * component (never a symlink), or undefined when the path does not lead to anything.
 */
export function walkInRoot(rootFd: number, path: string, symlinks: SymlinkRule, where: string): number | undefined {
  const native = nativeFs();
  const stack: number[] = []; // directories entered below the root, innermost last
  const current = (): number => stack[stack.length - 1] ?? rootFd;
  const popAll = (): void => {
    for (let fd = stack.pop(); fd !== undefined; fd = stack.pop()) native.close(fd);
  };
  let todo = components(path);
  let hops = 0;
  try {
    while (todo.length > 0) {
      const name = todo.shift()!;
      if (name === '..') {
        const fd = stack.pop(); // at the root, ".." is the root
        if (fd !== undefined) native.close(fd);
        continue;
      }
      try {
        if (todo.length > 0) {
          stack.push(native.openDirAt(current(), name));
          continue;
        }
        const fd = native.openPathAt(current(), name);
        let keep = false;
        try {
          keep = fileTypeOf(native.fstat(fd)) !== 'symlink';
        } finally {
          if (!keep) native.close(fd);
        }
        if (keep) return fd;
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'ENOENT') return undefined;
        if (code !== 'ELOOP' && code !== 'ENOTDIR') throw resolveError(where, path, err);
      }
      // A symlink, or (ELOOP/ENOTDIR) something that is not a directory.
      if (symlinks === 'refuse') return undefined;
      let target: Buffer;
      try {
        target = native.readlinkat(current(), name);
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'ENOENT') return undefined;
        if (code !== 'EINVAL') throw resolveError(where, path, err);
        // Not a symlink: a file in the middle of the path, or swapped since: look again, boundedly.
        if (todo.length > 0) return undefined;
        todo = [name];
        if (++hops > MAX_SYMLINKS) return undefined;
        continue;
      }
      if (++hops > MAX_SYMLINKS) {
        throw new FerryError('UNSAFE_PATH', `read ${path} in ${where}: too many levels of symbolic links`);
      }
      const text = target.toString();
      if (text.startsWith('/')) popAll();
      todo = [...components(text), ...todo];
    }
    return undefined; // the root itself, or a directory: not a file
  } finally {
    popAll();
  }
}

/** An O_PATH fd of `path` in `rootFd` by the rule, or undefined when absent. */
function openInRoot(rootFd: number, path: string, symlinks: SymlinkRule, useOpenat2: boolean, where: string): number | undefined {
  const native = nativeFs();
  if (useOpenat2) {
    const resolve = symlinks === 'in-root' ? RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS : RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const rel = components(path).join('/');
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        return native.openat2(rootFd, rel === '' ? '.' : rel, resolve);
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
        // A link where RESOLVE_NO_SYMLINKS allows none, or a /proc magic link: never followed.
        if (code === 'ELOOP' && symlinks === 'refuse') return undefined;
        if (code === 'ELOOP' || code === 'EXDEV') {
          throw new FerryError('UNSAFE_PATH', `read ${path} in ${where}: too many levels of symbolic links, or a link out of it`, { cause: err });
        }
        if (code === 'EAGAIN') continue; // a rename raced the lookup of "..": the kernel asks to retry
        if (code === 'ENOSYS' || code === 'EPERM') break; // no openat2 (old kernel, or filtered): walk
        throw resolveError(where, path, err);
      }
    }
  }
  return walkInRoot(rootFd, path, symlinks, where);
}

/**
 * The bytes of the regular file `path` under the directory fd `rootFd`; undefined when it is
 * absent or not a regular file (a FIFO, a device, a directory: never opened). Over `maxBytes`:
 * refused.
 */
export async function readFileInRoot(rootFd: number, path: string, options: ReadInRootOptions = {}): Promise<Buffer | undefined> {
  const native = nativeFs();
  const where = options.where ?? 'the container';
  const maxBytes = options.maxBytes ?? USER_FILE_MAX_BYTES;
  const pathFd = openInRoot(rootFd, path, options.symlinks ?? 'in-root', options.openat2 ?? true, where);
  if (pathFd === undefined) return undefined;
  let fd: number | null;
  try {
    fd = native.reopenRegular(pathFd);
  } catch (err) {
    if (errnoCode(err) === 'EAGAIN') throw new FerryError('IO_ERROR', `read ${path} in ${where}: it is locked (a lease)`, { cause: err });
    throw resolveError(where, path, err);
  } finally {
    native.close(pathFd);
  }
  if (fd === null) return undefined;
  try {
    // One byte more than allowed tells a file over the limit; the size fstat gives is not trusted
    // (it can grow while we read, and /proc files say 0). Read synchronously: a few small files.
    const bytes = readFdSync(fd, maxBytes + 1);
    if (bytes.length > maxBytes) {
      throw new FerryError('UNSUPPORTED', `${path} in ${where} is over the ${maxBytes}-byte limit for reading it`, {
        hint: 'give numeric ids (-u 1000:1000), which need no lookup',
      });
    }
    return bytes;
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw resolveError(where, path, err);
  } finally {
    native.close(fd);
  }
}

async function readUserFiles(read: (path: string) => Promise<Buffer | undefined>): Promise<{ passwd: string | undefined; group: string | undefined }> {
  return { passwd: (await read('/etc/passwd'))?.toString('utf8'), group: (await read('/etc/group'))?.toString('utf8') };
}

/**
 * The user of a running container, from its /etc/passwd and /etc/group as its processes see
 * them (runc reads them inside the container too): through /proc/PID/root of its init.
 */
export async function resolveUserInProcessRoot(pid: number, pidStart: string, spec: string, where: string, options: Pick<ReadInRootOptions, 'openat2'> = {}): Promise<ExecUser> {
  const native = nativeFs();
  let rootFd: number;
  try {
    rootFd = native.openDir(`/proc/${pid}/root`);
  } catch (err) {
    throw new FerryError('RUNTIME_ERROR', `look up user ${spec} in ${where}: its root cannot be opened: ${errnoReason(err)}`, { cause: err });
  }
  try {
    // The fd now holds the root; the pid must still be the container's init (not reused).
    if (!isAlive(pid, pidStart)) throw new FerryError('RUNTIME_ERROR', `look up user ${spec} in ${where}: it is not running`);
    const files = await readUserFiles((path) => readFileInRoot(rootFd, path, { ...options, where }));
    return resolveUser(spec, files.passwd, files.group, where);
  } finally {
    native.close(rootFd);
  }
}

/**
 * The user of an image (or a stopped container), from its layer directories (top first): the
 * overlay view is resolved by lookupLayered (links inside the image), and the file is then opened
 * from its layer's directory fd without following any link, as readFileInRoot does.
 */
export async function resolveUserInLayers(layers: readonly string[], spec: string, where: string, options: Pick<ReadInRootOptions, 'openat2'> = {}): Promise<ExecUser> {
  const native = nativeFs();
  const read = async (path: string): Promise<Buffer | undefined> => {
    const entry = await lookupLayered(layers, path, true);
    if (entry === undefined || !entry.stat.isFile()) return undefined;
    const layer = layers.find((l) => entry.hostPath.startsWith(`${l}/`));
    if (layer === undefined) return undefined;
    let layerFd: number;
    try {
      layerFd = native.openDir(layer);
    } catch (err) {
      throw resolveError(where, path, err);
    }
    try {
      return await readFileInRoot(layerFd, entry.hostPath.slice(layer.length + 1), { ...options, symlinks: 'refuse', where });
    } finally {
      native.close(layerFd);
    }
  };
  const files = await readUserFiles(read);
  return resolveUser(spec, files.passwd, files.group, where);
}
