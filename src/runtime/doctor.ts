import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { pathExists } from '../io/atomic-file.js';
import { release } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { FerryError, messageOf } from '../errors.js';
import { mountOf, parseMountInfo } from '../io/mounts.js';
import { extractDirCandidates, nativePart, packedBuild, untrustedReason, type NativePartName } from '../io/native-parts.js';
import { freeBytes, FREE_SPACE_RESERVE } from '../store/index.js';
import { fsck } from '../store/index.js';
import { openStore } from '../store/index.js';
import { launch, LaunchError } from './launcher.js';
import { findSlirp4netns } from './network.js';

/**
 * `ferry doctor`: what this host lacks before a run, each with its fix. Checks are real where they
 * can be: the overlay is test-mounted on the store's own filesystem by the launcher, in fresh
 * mount, PID, UTS, IPC and network namespaces, exactly as `ferry run` would do it.
 */

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface DoctorCheck {
  /** Stable name: root, kernel, overlay, namespaces, cgroups, network, space, noexec, store, native. */
  name: string;
  status: CheckStatus;
  /** What was found. */
  detail: string;
  /** What to do about it, when not ok. */
  fix?: string;
}

export interface DoctorReport {
  /** True when ferry can run containers on this host (no check failed). */
  ok: boolean;
  storeRoot: string;
  checks: DoctorCheck[];
}

export interface DoctorOptions {
  storeRoot: string;
  uid?: number;
}

/** --network private: inbound (-p) always; outbound only through slirp4netns. */
export function checkNetwork(): DoctorCheck {
  const slirp = findSlirp4netns();
  return slirp !== undefined
    ? check('network', 'ok', `--network private and -p: outbound traffic through ${slirp}; no firewall rules, links or routes are added to the host`)
    : check('network', 'warn', '--network private and -p work, but containers on a private network reach nothing outside it (slirp4netns not found in /usr/bin, /usr/local/bin)', 'install slirp4netns (Debian/Ubuntu: apt-get install slirp4netns; RHEL: dnf install slirp4netns)');
}

/** 4.18: what the official Node build needs, and overlay's redirect/index features are there. */
const MIN_KERNEL: readonly [number, number] = [4, 18];
/** Below this free on the store, an import of a typical bundle will not fit. */
const LOW_SPACE = 1024 * 1024 * 1024;

function check(name: string, status: CheckStatus, detail: string, fix?: string): DoctorCheck {
  return fix === undefined || status === 'ok' ? { name, status, detail } : { name, status, detail, fix };
}


/** The nearest directory at or above `path` that exists: where a store there would be created. */
async function existingAncestor(path: string): Promise<string> {
  let p = path;
  while (!(await pathExists(p)) && dirname(p) !== p) p = dirname(p);
  return p;
}

export function checkRoot(uid: number): DoctorCheck {
  return uid === 0
    ? check('root', 'ok', 'running as root')
    : check('root', 'fail', `running as uid ${uid}: containers need root (mounts, namespaces)`, 'run ferry as root (sudo ferry ...); rootless containers are not supported yet');
}

export function checkKernel(text: string = release()): DoctorCheck {
  const m = /^(\d+)\.(\d+)/.exec(text);
  if (m === null) return check('kernel', 'warn', `kernel ${text}: version not understood`, `ferry needs Linux >= ${MIN_KERNEL.join('.')}`);
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const old = major < MIN_KERNEL[0] || (major === MIN_KERNEL[0] && minor < MIN_KERNEL[1]);
  return old
    ? check('kernel', 'fail', `Linux ${text} is older than ${MIN_KERNEL.join('.')}`, `upgrade the kernel to ${MIN_KERNEL.join('.')} or later (RHEL 8, Debian 10 and later have it)`)
    : check('kernel', 'ok', `Linux ${text}`);
}

const NAMESPACES = ['mnt', 'pid', 'uts', 'ipc', 'net', 'user'] as const;
/** Those `ferry run` creates; user namespaces are for rootless containers, not used yet. */
const NEEDED_NAMESPACES = new Set<string>(['mnt', 'pid', 'uts', 'ipc', 'net']);

/** Which namespace kinds the kernel offers (/proc/self/ns) and allows (user.max_*_namespaces). */
export async function checkNamespaces(): Promise<DoctorCheck> {
  const missing: string[] = [];
  const disabled: string[] = [];
  for (const ns of NAMESPACES) {
    if (!(await pathExists(`/proc/self/ns/${ns}`))) {
      missing.push(ns);
      continue;
    }
    const limitFile = `/proc/sys/user/max_${ns === 'mnt' ? 'mnt' : ns}_namespaces`;
    if (await pathExists(limitFile)) {
      const limit = Number((await readFile(limitFile, 'utf8')).trim());
      if (limit === 0) disabled.push(ns);
    }
  }
  const bad = [...missing, ...disabled];
  const neededBad = bad.filter((ns) => NEEDED_NAMESPACES.has(ns));
  const detail = bad.length === 0
    ? `${NAMESPACES.join(', ')} namespaces available`
    : `${missing.length > 0 ? `not in this kernel: ${missing.join(', ')}` : ''}${missing.length > 0 && disabled.length > 0 ? '; ' : ''}${disabled.length > 0 ? `disabled (user.max_*_namespaces = 0): ${disabled.join(', ')}` : ''}`;
  if (neededBad.length > 0) {
    return check('namespaces', 'fail', detail, `enable ${neededBad.join(', ')} namespaces: a kernel with CONFIG_${neededBad.map((n) => n.toUpperCase()).join('_NS, CONFIG_')}_NS, and sysctl user.max_<kind>_namespaces > 0`);
  }
  return bad.length > 0 ? check('namespaces', 'warn', `${detail} (only rootless containers would need them)`, 'sysctl -w user.max_user_namespaces=15000 if rootless use is planned') : check('namespaces', 'ok', detail);
}

/** What each v1 controller gives a container. */
const V1_NEEDS: Record<string, string> = {
  memory: '--memory, OOM reports, stats',
  cpu: '--cpus, --cpu-shares',
  cpuset: '--cpuset-cpus',
  pids: '--pids-limit',
  devices: 'the device rules',
  freezer: 'commit pausing through the freezer',
};

/** cgroup v2, v1 or none, from the mount table: resource limits (--memory, --cpus, --pids-limit) need one. */
export async function checkCgroups(mountInfo?: string): Promise<DoctorCheck> {
  let text = mountInfo;
  if (text === undefined) {
    try {
      text = await readFile('/proc/self/mountinfo', 'utf8');
    } catch (err) {
      return check('cgroups', 'warn', `cannot read /proc/self/mountinfo: ${messageOf(err)}`, 'mount /proc');
    }
  }
  const mounts = parseMountInfo(text);
  const v2 = mounts.find((m) => m.fsType === 'cgroup2');
  const v1 = mounts.filter((m) => m.fsType === 'cgroup');
  if (v2 !== undefined && v1.length === 0) return check('cgroups', 'ok', `cgroup v2 at ${v2.mountPoint}`);
  if (v1.length > 0) {
    const text = `cgroup v1 (${v1.length} hierarchies)${v2 === undefined ? '' : `, v2 at ${v2.mountPoint} (hybrid)`}`;
    const have = new Set(v1.flatMap((m) => m.superOptions));
    const missing = Object.keys(V1_NEEDS).filter((c) => !have.has(c));
    if (missing.length === 0) return check('cgroups', 'ok', text);
    return check('cgroups', 'warn', `${text} without ${missing.map((c) => `${c} (${V1_NEEDS[c]})`).join(', ')}: those are refused with an error naming the controller`,
      `mount the missing hierarchies, e.g. mkdir /sys/fs/cgroup/${missing[0]} && mount -t cgroup -o ${missing[0]} cgroup /sys/fs/cgroup/${missing[0]}`);
  }
  return check('cgroups', 'warn', 'no cgroup filesystem mounted: containers run, but without resource limits', 'mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd, which mounts it)');
}

/** Free space where the store is (or would be created). */
export async function checkSpace(storeRoot: string): Promise<DoctorCheck> {
  const where = await existingAncestor(storeRoot);
  const free = await freeBytes(where);
  const text = `${(free / 1e9).toFixed(1)} GB free on the filesystem of ${where}`;
  if (free < FREE_SPACE_RESERVE) return check('space', 'fail', text, `free space there, or put the store elsewhere (--root or FERRY_ROOT)`);
  if (free < LOW_SPACE) return check('space', 'warn', `${text}: a bundle's images may not fit`, 'free space there, or put the store elsewhere (--root or FERRY_ROOT)');
  return check('space', 'ok', text);
}

/** noexec on the store (layers are executed from it through the overlay) and on the extract directory. */
export function checkNoexec(storeRoot: string): DoctorCheck[] {
  const out: DoctorCheck[] = [];
  const store = mountOf(storeRoot);
  if (store === undefined) out.push(check('noexec', 'warn', `the mount holding ${storeRoot} is not in /proc/self/mountinfo`, 'inside a chroot, bind-mount its root onto itself first'));
  else if (store.options.includes('noexec')) {
    out.push(check('noexec', 'warn', `the store ${storeRoot} is on a noexec mount (${store.mountPoint}); the overlay test below shows whether containers can still run`, `remount ${store.mountPoint} with exec, or put the store elsewhere (--root)`));
  } else out.push(check('noexec', 'ok', `the store's mount ${store.mountPoint} allows exec`));
  const packed = packedBuild();
  if (packed !== undefined) {
    const refused: string[] = [];
    let usable: string | undefined;
    for (const dir of packed.extractDirs ?? extractDirCandidates()) {
      try {
        const why = untrustedReason(dir);
        if (why === undefined) {
          usable = dir;
          break;
        }
        refused.push(why);
      } catch (err) {
        refused.push(`${dir}: ${messageOf(err)}`);
      }
    }
    out.push(usable !== undefined
      ? check('noexec', 'ok', `native parts are extracted to ${usable}: root-only, exec allowed`)
      : check('noexec', 'fail', `no usable directory for the native parts: ${refused.join('; ')}`, 'ferry extracts them to /usr/local/lib/ferry (or /var/lib/ferry/native): make it exec-capable and writable only by root'));
  }
  return out;
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The launcher and addons: present, and (packed) matching the hashes the executable carries. */
export async function checkNativeParts(): Promise<DoctorCheck> {
  const packed = packedBuild();
  const names: NativePartName[] = packed === undefined ? ['ferry-launch', 'ferry_native.node'] : ['ferry-launch', 'ferry_native.node', 'zstd.node'];
  const found: string[] = [];
  for (const name of names) {
    try {
      const path = nativePart(name);
      found.push(`${name} ${sha256(await readFile(path)).slice(0, 12)}`);
    } catch (err) {
      return check('native', 'fail', messageOf(err), err instanceof FerryError ? err.hint : undefined);
    }
  }
  return check('native', 'ok', `${packed === undefined ? 'built by node-gyp' : 'extracted and matching their sha256'}: ${found.join(', ')}`);
}

/** A quick fsck (structure, refs, leftovers; blobs are not hashed). */
export async function checkStore(storeRoot: string): Promise<DoctorCheck> {
  if (!(await pathExists(join(storeRoot, 'refs.json')))) return check('store', 'ok', `no store yet at ${storeRoot} (the first import creates it)`);
  const store = await openStore({ root: storeRoot, readOnly: true });
  const result = await fsck(store, { quick: true });
  if (result.problems.length === 0) return check('store', 'ok', `${storeRoot}: ${result.refsChecked} images, ${result.layersChecked} layers, ${result.blobsChecked} blobs, consistent (blobs not hashed: ferry fsck does)`);
  const first = result.problems.slice(0, 3).map((p) => p.message).join('; ');
  return check('store', 'fail', `${storeRoot}: ${result.problems.length} problems: ${first}${result.problems.length > 3 ? '; ...' : ''}`, 'ferry fsck --repair, then import the affected images again');
}

/**
 * Mount an overlay on the store's filesystem and start a process in new mount, PID, UTS, IPC and
 * network namespaces, through the launcher `ferry run` uses. The command does not exist on
 * purpose: "not found" (127) means everything before the exec worked.
 */
export async function checkOverlay(storeRoot: string): Promise<DoctorCheck> {
  const storeExists = await pathExists(join(storeRoot, 'refs.json'));
  const base = storeExists ? join(storeRoot, 'tmp') : await existingAncestor(storeRoot);
  if (storeExists) await mkdir(base, { recursive: true });
  const dir = await mkdtemp(join(base, storeExists ? `doctor-${process.pid}-` : '.ferry-doctor-'));
  try {
    const lower = join(dir, 'lower');
    for (const d of ['proc', 'sys', 'dev', 'etc']) await mkdir(join(lower, d), { recursive: true, mode: 0o755 });
    for (const d of ['upper', 'work', 'rootfs']) await mkdir(join(dir, d), { mode: 0o755 });
    await writeFile(join(lower, 'etc', 'hostname'), '');
    const where = `${dir} (${mountOf(dir)?.fsType ?? 'unknown filesystem'})`;
    try {
      const launched = await launch(
        {
          mode: 'run',
          rootfsDir: join(dir, 'rootfs'),
          mountCwd: dir,
          lowerDirs: [relative(dir, lower)],
          upperDir: 'upper',
          workDir: 'work',
          readOnly: false,
          hostname: 'ferry-doctor',
          network: 'none',
          binds: [],
          exitFile: join(dir, 'exit'),
          makeCwd: false,
          argv: ['/ferry-doctor-probe'],
          env: [],
          cwd: '/',
          uid: 0,
          gid: 0,
          groups: [],
          tty: false,
          interactive: false,
        },
        { stdio: ['ignore', 'ignore', 'ignore'], detached: false },
      );
      await launched.exited;
      return check('overlay', 'ok', `overlay mounted on ${where} in new namespaces`);
    } catch (err) {
      if (err instanceof LaunchError && err.exitCode === 127) return check('overlay', 'ok', `overlay mounted on ${where}, pivot_root and exec in new mount, pid, uts, ipc and net namespaces`);
      const message = messageOf(err);
      // A chroot whose root is not a mount point: the launcher cannot make / private nor pivot.
      if (/pivot_root|make \/ private/.test(message)) {
        return check('overlay', 'fail', `the launcher's test run failed before the overlay: ${message}`, 'ferry needs its root directory to be a mount point: inside a chroot, mount --bind the new root onto itself before entering it');
      }
      const supported = (await readFile('/proc/filesystems', 'utf8')).includes('\toverlay\n');
      return check(
        'overlay',
        'fail',
        `test mount of an overlay on ${where} failed: ${message}${supported ? '' : ' (overlay is not in /proc/filesystems)'}`,
        supported
          ? 'put the store on a local ext4 or xfs filesystem (--root or FERRY_ROOT); overlayfs cannot use NFS, FUSE or another overlay as its upper layer'
          : 'load the overlay module (modprobe overlay) or use a kernel with CONFIG_OVERLAY_FS',
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Every check, in the order `ferry doctor` prints them. */
export async function runDoctor(options: DoctorOptions): Promise<DoctorReport> {
  const uid = options.uid ?? process.getuid?.() ?? -1;
  const checks: DoctorCheck[] = [checkRoot(uid), checkKernel()];
  const native = await checkNativeParts();
  checks.push(await checkNamespaces(), await checkCgroups(), checkNetwork(), await checkSpace(options.storeRoot), ...checkNoexec(options.storeRoot), native);
  if (uid === 0 && native.status === 'ok') checks.push(await checkOverlay(options.storeRoot));
  else checks.push(check('overlay', 'fail', `not tested: ${uid !== 0 ? 'needs root' : 'the launcher is missing'}`, uid !== 0 ? 'run ferry doctor as root' : native.fix ?? 'see the native check'));
  checks.push(await checkStore(options.storeRoot));
  return { ok: checks.every((c) => c.status !== 'fail'), storeRoot: options.storeRoot, checks };
}
