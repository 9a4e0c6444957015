import { readFileSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, messageOf } from '../errors.js';

/**
 * Each container's cgroups: a `ferry/<id>` node in every hierarchy ferry uses (cgroupfs, as runc
 * does without systemd). Today they carry docker's device rules (cgroup v1 `devices`) and give
 * `commit` a freezer; the launcher puts the container's init into them before it runs anything.
 * On cgroup v2 the node serves freezing; device access is denied there by nodev on every mount
 * the container can write (v2 device rules need a BPF program).
 */
export interface CgroupMounts {
  /** v1 hierarchies by controller name (devices, freezer, memory, ...). */
  v1: Map<string, string>;
  /** The cgroup2 mount, when there is one (the unified hierarchy, or hybrid's /sys/fs/cgroup/unified). */
  v2: string | undefined;
}

let mounts: CgroupMounts | undefined;

/** Where the cgroup filesystems are mounted, from /proc/self/mountinfo. */
export function cgroupMounts(): CgroupMounts {
  if (mounts !== undefined) return mounts;
  const v1 = new Map<string, string>();
  let v2: string | undefined;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const before = line.slice(0, dash).split(' ');
    const [fstype, , superOptions = ''] = line.slice(dash + 3).split(' ');
    // Only a hierarchy's root is a place to make ferry's nodes (a bind of a sub-cgroup is not).
    const mountPoint = before[4]?.replace(/\\040/g, ' ');
    if (mountPoint === undefined || before[3] !== '/') continue;
    if (fstype === 'cgroup2') v2 ??= mountPoint;
    else if (fstype === 'cgroup') {
      for (const opt of superOptions.split(',')) if (!v1.has(opt) && /^[a-z_]+$/.test(opt) && opt !== 'rw' && opt !== 'ro') v1.set(opt, mountPoint);
    }
  }
  mounts = { v1, v2 };
  return mounts;
}

export interface ContainerCgroups {
  /** Every cgroup.procs file the container's processes are written into. */
  procs: string[];
  /** v1 devices node, when the host has the controller. */
  devices: string | undefined;
  /** The node to freeze for `commit --pause`: v1 freezer, else the v2 node. */
  freezer: string | undefined;
  freezerVersion: 1 | 2 | undefined;
}

/** The nodes of container `id` (whether or not they exist yet). */
export function containerCgroups(id: string): ContainerCgroups {
  const m = cgroupMounts();
  const node = (base: string): string => join(base, 'ferry', id);
  const devices = m.v1.has('devices') ? node(m.v1.get('devices')!) : undefined;
  const v1Freezer = m.v1.has('freezer') ? node(m.v1.get('freezer')!) : undefined;
  const v2 = m.v2 !== undefined ? node(m.v2) : undefined;
  const dirs = [devices, v1Freezer, v2].filter((d): d is string => d !== undefined);
  return {
    procs: dirs.map((d) => join(d, 'cgroup.procs')),
    devices,
    freezer: v1Freezer ?? v2,
    freezerVersion: v1Freezer !== undefined ? 1 : v2 !== undefined ? 2 : undefined,
  };
}

/**
 * docker's default device rules (runc's AllowedDevices): mknod of any node, but read and write
 * only of the standard ones; everything else, host disks included, is denied.
 */
export const DEFAULT_DEVICE_RULES: readonly string[] = [
  'c *:* m',
  'b *:* m',
  'c 1:3 rwm', // null
  'c 1:5 rwm', // zero
  'c 1:7 rwm', // full
  'c 1:8 rwm', // random
  'c 1:9 rwm', // urandom
  'c 5:0 rwm', // tty
  'c 5:1 rwm', // console
  'c 5:2 rwm', // ptmx
  'c 136:* rwm', // pts
];

async function writeControl(path: string, value: string, id: string): Promise<void> {
  try {
    await writeFile(path, value);
  } catch (err) {
    throw new FerryError('RUNTIME_ERROR', `container ${id}: write "${value}" to ${path}: ${messageOf(err)}`, {
      cause: err,
      hint: 'ferry needs root and writable cgroup filesystems (/sys/fs/cgroup) to confine containers',
    });
  }
}

/** Make the container's nodes and set its device rules; returns what the launcher joins. */
export async function createContainerCgroups(id: string, options: { privileged: boolean }): Promise<ContainerCgroups> {
  const cg = containerCgroups(id);
  for (const procs of cg.procs) await mkdir(join(procs, '..'), { recursive: true });
  if (cg.devices !== undefined && !options.privileged) {
    await writeControl(join(cg.devices, 'devices.deny'), 'a', id);
    for (const rule of DEFAULT_DEVICE_RULES) await writeControl(join(cg.devices, 'devices.allow'), rule, id);
  }
  return cg;
}

/** Remove what is left of the container's nodes (the launcher removes them when it ends). */
export async function removeContainerCgroups(id: string): Promise<void> {
  for (const procs of containerCgroups(id).procs) {
    const dir = join(procs, '..');
    try {
      await rmdir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue;
      throw new FerryError('RUNTIME_ERROR', `container ${id}: remove cgroup ${dir}: ${messageOf(err)}`, { cause: err });
    }
  }
}

/** The cgroup.procs of the container's nodes that exist now (for exec into a running one). */
export async function existingCgroupProcs(id: string): Promise<string[]> {
  const out: string[] = [];
  for (const procs of containerCgroups(id).procs) {
    try {
      await readFile(procs);
      out.push(procs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return out;
}
