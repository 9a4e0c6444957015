import { execFile } from 'node:child_process';
import { access, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/ferry.js';

/**
 * The packed executable and a minimal Debian root filesystem to run it in. The pack is built by
 * `scripts/pack/pack.js` (what `npm run pack` runs after tsc); the root filesystem is
 * `debootstrap --variant=minbase`, made once and kept under /var/tmp (it only ever serves as the
 * read-only lower layer of an overlay, so runs never change it).
 */

export const exec = promisify(execFile);

export const PACK_DIR = join(REPO_ROOT, 'pack');
export const PACK = join(PACK_DIR, 'ferry-linux-x64');
export const PACK_WORK = join(PACK_DIR, 'work-x64');

const ROOTFS_CACHE = process.env.FERRY_TEST_ROOTFS ?? '/var/tmp/ferry-test-debian-minbase';
const MIRROR = process.env.FERRY_TEST_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

let built: Promise<void> | undefined;

/** Build the pack once per test process (the zstd addon is cached in pack/work-x64 across runs). */
export function buildPack(): Promise<void> {
  built ??= exec(process.execPath, [join(REPO_ROOT, 'scripts', 'pack', 'pack.js')], { cwd: REPO_ROOT, maxBuffer: 64 * 1024 * 1024, timeout: 15 * 60_000 }).then(() => undefined);
  return built;
}

/** A Debian bookworm minbase tree: no node, no npm, no compiler. */
export async function minimalDebian(): Promise<string> {
  const rootfs = join(ROOTFS_CACHE, 'rootfs');
  if (await exists(join(ROOTFS_CACHE, 'complete'))) return rootfs;
  await rm(ROOTFS_CACHE, { recursive: true, force: true });
  await mkdir(ROOTFS_CACHE, { recursive: true });
  const partial = join(ROOTFS_CACHE, 'rootfs.partial');
  await exec('debootstrap', ['--variant=minbase', 'bookworm', partial, MIRROR], { maxBuffer: 64 * 1024 * 1024, timeout: 20 * 60_000 });
  await rename(partial, rootfs);
  await writeFile(join(ROOTFS_CACHE, 'complete'), `${MIRROR}\n`);
  return rootfs;
}

export interface ChrootResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ChrootOptions {
  /** Mount a noexec tmpfs on /tmp, as hardened hosts do. */
  noexecTmp: boolean;
  /** Files put into the root's /mnt/share (bind-mounted from this directory). */
  share: string;
  /** Where the overlay's upper layer and the store live (on the host). */
  work: string;
  /** false: chroot into a plain directory, not a mount point (default true). */
  rootIsMountPoint?: boolean;
}

function quote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * Run commands as root inside the minimal Debian tree, entered with chroot with /proc (and /dev)
 * mounted, in a private mount namespace (everything is unmounted when it ends). The tree is the
 * lower layer of an overlay, so the root is a mount point as on a real host; the store is a host
 * directory bind-mounted on /var/lib/ferry (an overlay cannot be the upper layer of another).
 * The packed executable is installed the way the README says: one copy to /usr/local/bin/ferry.
 */
export async function inChroot(rootfs: string, commands: string[], options: ChrootOptions): Promise<ChrootResult[]> {
  const { work, share } = options;
  for (const d of ['upper', 'ovl-work', 'merged', 'store', 'results']) await mkdir(join(work, d), { recursive: true });
  const plain = options.rootIsMountPoint === false;
  // For a root that is no mount point, the overlay holds the tree's parent and chroot enters the tree.
  const merged = join(work, 'merged');
  const r = plain ? join(merged, basename(rootfs)) : merged;
  const lower = plain ? dirname(rootfs) : rootfs;
  const lines = [
    'set -eu',
    `mount -t overlay overlay -o ${quote(`lowerdir=${lower},upperdir=${join(work, 'upper')},workdir=${join(work, 'ovl-work')}`)} ${quote(merged)}`,
    `mount -t proc proc ${quote(join(r, 'proc'))}`,
    `mount --rbind /dev ${quote(join(r, 'dev'))}`,
    `mkdir -p ${quote(join(r, 'var/lib/ferry'))} ${quote(join(r, 'mnt/share'))}`,
    `mount --bind ${quote(join(work, 'store'))} ${quote(join(r, 'var/lib/ferry'))}`,
    `mount --bind ${quote(share)} ${quote(join(r, 'mnt/share'))}`,
    ...(options.noexecTmp ? [`mount -t tmpfs -o noexec,nosuid,nodev tmpfs ${quote(join(r, 'tmp'))}`] : []),
    `install -m 755 ${quote(PACK)} ${quote(join(r, 'usr/local/bin/ferry'))}`,
    'set +e',
    ...commands.map((c, i) => {
      const out = join(work, 'results', String(i));
      return `env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot ${quote(r)} /bin/sh -c ${quote(c)} >${quote(`${out}.out`)} 2>${quote(`${out}.err`)} </dev/null; echo $? >${quote(`${out}.rc`)}`;
    }),
  ];
  const script = join(work, 'session.sh');
  await writeFile(script, `${lines.join('\n')}\n`);
  await exec('unshare', ['--mount', '--propagation', 'private', 'sh', script], { maxBuffer: 64 * 1024 * 1024, timeout: 10 * 60_000 });
  const results: ChrootResult[] = [];
  for (let i = 0; i < commands.length; i++) {
    const base = join(work, 'results', String(i));
    results.push({
      code: Number((await readFile(`${base}.rc`, 'utf8')).trim()),
      stdout: await readFile(`${base}.out`, 'utf8'),
      stderr: await readFile(`${base}.err`, 'utf8'),
    });
  }
  return results;
}

/** GLIBC_x.y versions an ELF's dynamic symbols need; empty for a static executable. */
export async function glibcVersions(path: string, objdump = 'objdump'): Promise<{ dynamic: boolean; versions: string[]; needed: string[] }> {
  const { stdout: headers } = await exec(objdump, ['-p', path], { maxBuffer: 64 * 1024 * 1024 });
  if (!/^Dynamic Section:/m.test(headers)) return { dynamic: false, versions: [], needed: [] };
  const { stdout } = await exec(objdump, ['-T', path], { maxBuffer: 256 * 1024 * 1024 });
  const versions = [...new Set([...stdout.matchAll(/\(GLIBC_([0-9.]+)\)/g)].map((m) => m[1]!))];
  const needed = [...headers.matchAll(/^\s*NEEDED\s+(\S+)$/gm)].map((m) => m[1]!);
  return { dynamic: true, versions, needed };
}

/** a > b for dotted versions (2.34 > 2.28, 2.3.4 < 2.28). */
export function versionAbove(a: string, b: string): boolean {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return false;
}
