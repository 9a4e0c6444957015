import { constants as fsConstants, type Stats } from 'node:fs';
import { chmod, lchown, lutimes, mkdir, open, readFile, readdir, readlink, rename, rm, symlink, utimes } from '../io/fs-promises.js';
import { join, posix, relative } from 'node:path';
import { FerryError, UsageError, messageOf } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-file.js';
import { nativeFs } from '../io/native.js';
import type { Store } from '../store/index.js';
import { ownedName } from '../store/read.js';
import type { LaunchBind } from './launcher.js';
import { listLayeredDir, lookupLayered, type LayeredEntry } from './layered-fs.js';
import { listContainerRecords, shortId, type ContainerRecord } from './state.js';
import { randomBytes } from '../io/random.js';
import { isoTime } from '../io/iso-time.js';

/**
 * Volumes (docker's "local" driver): `ROOT/volumes/NAME/` holds `volume.json` (what it is) and
 * `_data/`, the directory a container gets as a bind mount (nodev, nosuid by the launcher). A new
 * volume is filled with what the image has at its mount path (docker's copy-up), read from the
 * image's layer directories without following any symlink out of the image.
 */
export interface VolumeRecord {
  name: string;
  created: string;
  /** Made for an image's VOLUME without a name: `rm -v` and `volume prune` remove it. */
  anonymous: boolean;
}

/** How a container uses a volume (ContainerRecord.volumeMounts). */
export interface VolumeMount {
  name: string;
  destination: string;
  anonymous: boolean;
}

/** -v NAME:/path[:opts] as parsed: the bind plus what create must do first. */
export interface NamedVolumeSpec {
  name: string;
  bind: LaunchBind;
  /** `nocopy`: do not fill a new volume from the image. */
  noCopy: boolean;
  /** `--mount type=volume` without a source: a new anonymous volume (`rm -v` removes it). */
  anonymous?: boolean;
}

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const META = 'volume.json';

export function volumesDir(root: string): string {
  return join(root, 'volumes');
}

export function volumeDataDir(root: string, name: string): string {
  return join(volumesDir(root), name, '_data');
}

/** docker's rule for volume names. */
export function checkVolumeName(name: string): string {
  if (!NAME_RE.test(name) || name.length > 255) {
    throw new UsageError(`volume name "${name}" is invalid`, { hint: 'use letters, digits, "_", "." and "-", starting with a letter or digit' });
  }
  return name;
}

export function anonymousVolumeName(): string {
  return randomBytes(32).toString('hex');
}

/**
 * `-v NAME:/path[:opts]`, or undefined when the first part is not a volume name (a host path:
 * parseVolume's business). Options as for a bind: ro/rw, suid/nosuid, exec/noexec, nocopy.
 */
export function parseNamedVolume(text: string): NamedVolumeSpec | undefined {
  const parts = text.split(':');
  const name = parts[0] ?? '';
  if (parts.length < 2 || parts.length > 3 || name.startsWith('/') || name.startsWith('.') || !NAME_RE.test(name)) return undefined;
  checkVolumeName(name);
  const ctr = parts[1]!;
  if (!ctr.startsWith('/')) throw new UsageError(`volume "${text}": the container path must be absolute`);
  const destination = posix.normalize(ctr).replace(/\/+$/, '');
  if (destination === '' || destination === '/') throw new UsageError(`volume "${text}": cannot mount over the container's root`);
  const bind: LaunchBind = { source: '', destination, readOnly: false };
  let noCopy = false;
  for (const o of (parts[2] ?? '') === '' ? [] : parts[2]!.split(',')) {
    if (o === 'ro' || o === 'rw') bind.readOnly = o === 'ro';
    else if (o === 'suid') bind.suid = true;
    else if (o === 'nosuid') delete bind.suid;
    else if (o === 'noexec') bind.noexec = true;
    else if (o === 'exec') delete bind.noexec;
    else if (o === 'nocopy') noCopy = true;
    else if (o === 'nodev') continue; // always
    else if (o === 'dev') throw new UsageError(`volume "${text}": "dev" is refused: device nodes on a container's mounts would reach host devices`);
    else throw new UsageError(`volume "${text}": unknown option "${o}" (ro, rw, suid, nosuid, exec, noexec, nocopy)`);
  }
  return { name, bind, noCopy };
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** The volume's record, or undefined when there is no such volume. */
export async function loadVolume(root: string, name: string): Promise<VolumeRecord | undefined> {
  let text: string;
  try {
    text = await readFile(join(volumesDir(root), name, META), 'utf8');
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return undefined;
    throw new FerryError('IO_ERROR', `read volume ${name}: ${messageOf(err)}`, { cause: err });
  }
  try {
    return JSON.parse(text) as VolumeRecord;
  } catch (err) {
    throw new FerryError('STORE_ERROR', `volume ${name}: ${META} is not valid JSON`, { cause: err, hint: `remove it with ferry volume rm ${name}` });
  }
}

export async function listVolumes(root: string): Promise<VolumeRecord[]> {
  let names: string[];
  try {
    names = await readdir(volumesDir(root));
  } catch (err) {
    if (errno(err) === 'ENOENT') return [];
    throw err;
  }
  const out: VolumeRecord[] = [];
  for (const name of names.sort()) {
    if (!NAME_RE.test(name)) continue;
    const v = await loadVolume(root, name);
    if (v !== undefined) out.push(v);
  }
  return out;
}

/**
 * Create volume `name` unless it exists; a new one is filled from the image's `layers` (top
 * first) at `path` when given. Built in tmp/ and renamed into place, so a half-copied volume is
 * never seen and two creators of the same volume agree on one.
 */
export async function ensureVolume(
  store: Store,
  name: string,
  options: { anonymous?: boolean; copyFrom?: { layers: readonly string[]; path: string } } = {},
): Promise<{ volume: VolumeRecord; created: boolean }> {
  const existing = await loadVolume(store.root, name);
  if (existing !== undefined) {
    if (options.copyFrom !== undefined) await fillEmptyVolume(store, name, options.copyFrom);
    return { volume: existing, created: false };
  }
  const record: VolumeRecord = { name, created: isoTime(), anonymous: options.anonymous ?? false };
  await mkdir(store.tmpDir, { recursive: true });
  await mkdir(volumesDir(store.root), { recursive: true, mode: 0o700 });
  const tmp = join(store.tmpDir, ownedName('volume'));
  await mkdir(tmp, { mode: 0o700 });
  try {
    const data = join(tmp, '_data');
    await mkdir(data, { mode: 0o755 });
    if (options.copyFrom !== undefined) await copyUp(options.copyFrom.layers, options.copyFrom.path, data);
    await writeFileAtomic(join(tmp, META), `${JSON.stringify(record, null, 2)}\n`, 0o600);
    try {
      await rename(tmp, join(volumesDir(store.root), name));
    } catch (err) {
      // Another ferry created it meanwhile: use theirs.
      if (errno(err) !== 'EEXIST' && errno(err) !== 'ENOTEMPTY') throw err;
      const theirs = await loadVolume(store.root, name);
      if (theirs === undefined) throw new FerryError('STORE_ERROR', `create volume ${name}: ${join(volumesDir(store.root), name)} exists but is not a volume`, { hint: 'remove that directory' });
      return { volume: theirs, created: false };
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return { volume: record, created: true };
}

/**
 * docker also fills an existing volume that is still empty (made by `volume create`) when a
 * container is created on it. Only while no container uses it: the copy replaces `_data` by a
 * rename, which a container that has it mounted would not see.
 */
async function fillEmptyVolume(store: Store, name: string, from: { layers: readonly string[]; path: string }): Promise<void> {
  const data = volumeDataDir(store.root, name);
  if ((await readdir(data)).length > 0 || (await containersUsingVolume(store.root, name)).length > 0) return;
  const tmp = join(volumesDir(store.root), name, ownedName('data'));
  await mkdir(tmp, { mode: 0o755 });
  try {
    await copyUp(from.layers, from.path, tmp);
    try {
      // rename(2) replaces an empty directory; one that filled up meanwhile stays (ENOTEMPTY).
      await rename(tmp, data);
    } catch (err) {
      if (errno(err) !== 'ENOTEMPTY' && errno(err) !== 'EEXIST') throw err;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Overlay-internal xattrs of the layer store are not the image's. */
function copiedXattr(name: string): boolean {
  return !name.startsWith('trusted.overlay.') && !name.startsWith('user.overlay.');
}

async function copyMeta(st: Stats, from: string, to: string): Promise<void> {
  const native = nativeFs();
  // chown first: it clears set-id bits and file capabilities, which chmod and the xattrs restore.
  await lchown(to, st.uid, st.gid);
  if (!st.isSymbolicLink()) await chmod(to, st.mode & 0o7777);
  for (const x of native.llistxattr(from)) {
    if (!copiedXattr(x)) continue;
    const value = native.lgetxattr(from, x);
    if (value !== null) native.lsetxattr(to, x, value);
  }
  if (st.isSymbolicLink()) await lutimes(to, st.atime, st.mtime);
  else await utimes(to, st.atime, st.mtime);
}

async function copyFileNoFollow(from: string, to: string): Promise<void> {
  const src = await open(from, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    const dst = await open(to, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const { bytesRead } = await src.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        await dst.write(buf, 0, bytesRead);
      }
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

async function copyEntry(entry: LayeredEntry, rel: string, to: string): Promise<void> {
  const st = entry.stat;
  if (st.isDirectory()) {
    await mkdir(to, { mode: 0o700 });
    await copyTree(entry, rel, to);
  } else if (st.isSymbolicLink()) {
    await symlink(await readlink(entry.hostPath), to);
  } else if (st.isFile()) {
    await copyFileNoFollow(entry.hostPath, to);
  } else {
    // Device nodes, fifos and sockets: a volume is mounted nodev, and docker's copy-up of them is
    // of no use to a service; they are left out rather than made with mknod on the host.
    return;
  }
  await copyMeta(st, entry.hostPath, to);
}

async function copyTree(dir: LayeredEntry, rel: string, to: string): Promise<void> {
  for (const [name, child] of await listLayeredDir(dir, rel)) await copyEntry(child, rel === '' ? name : `${rel}/${name}`, join(to, name));
}

/**
 * docker's copy-up: what the image has at `path` (a directory, symlinks on the way resolved inside
 * the image) becomes the volume's content, with owners, modes, times, xattrs and symlinks as they
 * are. Nothing at `path`, or a non-directory: the volume stays empty.
 */
export async function copyUp(layers: readonly string[], path: string, data: string): Promise<void> {
  const entry = await lookupLayered(layers, path, true);
  if (entry === undefined || !entry.stat.isDirectory()) return;
  const top = entry.dirLayers[0]!;
  const rel = relative(top, entry.hostPath);
  try {
    await copyTree(entry, rel, data);
    await copyMeta(entry.stat, entry.hostPath, data);
  } catch (err) {
    throw new FerryError('IO_ERROR', `fill volume from the image's ${path}: ${messageOf(err)}`, { cause: err });
  }
}

/** The records of the containers (any status) that use volume `name`: their status is not needed. */
export async function containersUsingVolume(root: string, name: string, all?: readonly ContainerRecord[]): Promise<ContainerRecord[]> {
  return (all ?? (await listContainerRecords(root))).filter((r) => (r.volumeMounts ?? []).some((m) => m.name === name));
}

/** Drop a volume (refused while a container uses it, unless `force`); false when it did not exist. */
export async function removeVolume(store: Store, name: string, options: { force?: boolean; except?: string } = {}): Promise<boolean> {
  const dir = join(volumesDir(store.root), name);
  const trash = join(store.tmpDir, ownedName('volume'));
  await mkdir(store.tmpDir, { recursive: true });
  const moved = await store.lock.with(async () => {
    if ((await loadVolume(store.root, name)) === undefined) return false;
    const users = (await containersUsingVolume(store.root, name)).filter((r) => r.id !== options.except);
    if (users.length > 0 && options.force !== true) {
      const names = users.map((r) => `${r.name} (${shortId(r.id)})`).join(', ');
      throw new FerryError('IN_USE', `remove volume ${name}: it is in use by container ${names}`, {
        hint: `remove the container first (ferry rm ${users[0]!.name})`,
      });
    }
    await rename(dir, trash);
    return true;
  });
  if (moved) await rm(trash, { recursive: true, force: true });
  return moved;
}

/** `volume rm` of a name that is not there. */
export function noSuchVolume(name: string): FerryError {
  return new FerryError('NOT_FOUND', `no such volume: ${name}`, { hint: 'ferry volume ls lists the volumes' });
}

/** `volume prune`: unused anonymous volumes, or with `all` every unused volume. */
export async function pruneVolumes(store: Store, all = false): Promise<string[]> {
  const containers = await listContainerRecords(store.root);
  const removed: string[] = [];
  for (const v of await listVolumes(store.root)) {
    if (!all && !v.anonymous) continue;
    if ((await containersUsingVolume(store.root, v.name, containers)).length > 0) continue;
    if (await removeVolume(store, v.name)) removed.push(v.name);
  }
  return removed;
}

/** docker's `volume inspect` shape. */
export function volumeJson(root: string, v: VolumeRecord): Record<string, unknown> {
  return {
    CreatedAt: v.created,
    Driver: 'local',
    Labels: v.anonymous ? { 'com.docker.volume.anonymous': '' } : {},
    Mountpoint: volumeDataDir(root, v.name),
    Name: v.name,
    Options: {},
    Scope: 'local',
  };
}

/**
 * The volumes a new container gets: its `-v NAME:` ones, then an anonymous one for each image
 * VOLUME that no -v or --tmpfs covers. Creates the missing volumes (filled from `layers`).
 */
export async function prepareVolumes(
  store: Store,
  named: readonly NamedVolumeSpec[],
  covered: ReadonlySet<string>,
  imageVolumes: Record<string, object> | undefined,
  layers: readonly string[],
): Promise<{ binds: LaunchBind[]; mounts: VolumeMount[] }> {
  const binds: LaunchBind[] = [];
  const mounts: VolumeMount[] = [];
  const want: Array<{ name: string; bind: LaunchBind; anonymous: boolean; noCopy: boolean }> = named.map((n) => ({ ...n, anonymous: n.anonymous ?? false }));
  const taken = new Set([...covered, ...named.map((n) => n.bind.destination)]);
  for (const path of Object.keys(imageVolumes ?? {})) {
    if (!path.startsWith('/')) continue;
    const destination = posix.normalize(path).replace(/\/+$/, '');
    if (destination === '' || taken.has(destination)) continue;
    taken.add(destination);
    want.push({ name: anonymousVolumeName(), bind: { source: '', destination, readOnly: false }, anonymous: true, noCopy: false });
  }
  for (const w of want) {
    await ensureVolume(store, w.name, { anonymous: w.anonymous, ...(w.noCopy ? {} : { copyFrom: { layers, path: w.bind.destination } }) });
    binds.push({ ...w.bind, source: volumeDataDir(store.root, w.name) });
    mounts.push({ name: w.name, destination: w.bind.destination, anonymous: w.anonymous });
  }
  return { binds, mounts };
}

/** `rm -v`: the removed container's anonymous volumes, unless another container uses one too. */
export async function removeAnonymousVolumes(store: Store, record: ContainerRecord): Promise<void> {
  for (const m of record.volumeMounts ?? []) {
    if (!m.anonymous) continue;
    if ((await containersUsingVolume(store.root, m.name)).some((r) => r.id !== record.id)) continue;
    await removeVolume(store, m.name, { except: record.id });
  }
}
