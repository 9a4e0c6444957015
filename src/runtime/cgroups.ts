import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { readFile } from '../io/fs-promises.js';
import { join } from 'node:path';
import { FerryError, messageOf } from '../errors.js';
import { sharesToWeight, type Resources } from './resources.js';

/**
 * Each container's cgroups: a `ferry/<id>` node in every hierarchy ferry uses (cgroupfs, as runc
 * does without systemd). They carry the resource limits, docker's device rules (cgroup v1
 * `devices`), the figures of `stats` and `commit`'s freezer; the launcher puts the container's
 * init into them before it runs anything.
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

/** The v1 controllers a container joins (for limits, stats, devices and freezing). */
const V1_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'cpuset', 'pids', 'blkio', 'devices', 'freezer'] as const;
type V1Controller = (typeof V1_CONTROLLERS)[number];

export interface ContainerCgroups {
  /** Every cgroup.procs file the container's processes are written into. */
  procs: string[];
  /** v1 nodes by controller (co-mounted controllers share one). */
  v1: Partial<Record<V1Controller, string>>;
  /** The v2 node, when there is a cgroup2 hierarchy. */
  v2: string | undefined;
  /** Whether limits go to the v2 node (a pure v2 host) rather than v1. */
  unified: boolean;
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
  const v1: Partial<Record<V1Controller, string>> = {};
  for (const c of V1_CONTROLLERS) if (m.v1.has(c)) v1[c] = node(m.v1.get(c)!);
  const v2 = m.v2 !== undefined ? node(m.v2) : undefined;
  const dirs = [...new Set([...Object.values(v1), ...(v2 !== undefined ? [v2] : [])])];
  return {
    procs: dirs.map((d) => join(d, 'cgroup.procs')),
    v1,
    v2,
    unified: m.v1.size === 0 && v2 !== undefined,
    devices: v1.devices,
    freezer: v1.freezer ?? v2,
    freezerVersion: v1.freezer !== undefined ? 1 : v2 !== undefined ? 2 : undefined,
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


/** A limit needs its controller: never a silently unlimited container. */
function missing(id: string, controller: string, flag: string): FerryError {
  return new FerryError('UNSUPPORTED', `container ${id}: ${flag} needs the ${controller} cgroup controller, which this host does not have`, {
    hint: `mount the cgroup v1 ${controller} controller or enable it in cgroup v2 (ferry doctor shows what the host has), or run without ${flag}`,
  });
}

/**
 * One step the launcher takes, in order, before the container starts: the plan is data (tested
 * without root), the launcher only acts (a few syscalls instead of tens of milliseconds of Node I/O).
 */
export type CgroupOp =
  | { mkdir: string }
  /** v1 cpuset: copy the parent's value when the file is empty (a new node has no CPUs). */
  | { inherit: string }
  | { write: string; value: string };

function nodeOps(cg: ContainerCgroups, unifiedControllers: readonly string[]): CgroupOp[] {
  const ops: CgroupOp[] = [];
  for (const [controller, dir] of Object.entries(cg.v1)) {
    const parent = join(dir, '..');
    ops.push({ mkdir: parent });
    if (controller === 'cpuset') ops.push({ inherit: join(parent, 'cpuset.cpus') }, { inherit: join(parent, 'cpuset.mems') });
    ops.push({ mkdir: dir });
    if (controller === 'cpuset') ops.push({ inherit: join(dir, 'cpuset.cpus') }, { inherit: join(dir, 'cpuset.mems') });
  }
  if (cg.v2 !== undefined) {
    const ferry = join(cg.v2, '..');
    ops.push({ mkdir: ferry });
    // No processes in inner nodes (v2 delegation): ferry/ only passes controllers down.
    if (unifiedControllers.length > 0) {
      const enable = unifiedControllers.map((c) => `+${c}`).join(' ');
      ops.push({ write: join(ferry, '..', 'cgroup.subtree_control'), value: enable }, { write: join(ferry, 'cgroup.subtree_control'), value: enable });
    }
    ops.push({ mkdir: cg.v2 });
  }
  return ops;
}

function v1Limits(cg: ContainerCgroups, id: string, r: Resources): CgroupOp[] {
  const ops: CgroupOp[] = [];
  const need = (c: V1Controller, flag: string): string => {
    const dir = cg.v1[c];
    if (dir === undefined) throw missing(id, c, flag);
    return dir;
  };
  if (r.memory !== undefined) {
    const dir = need('memory', '--memory');
    ops.push({ write: join(dir, 'memory.limit_in_bytes'), value: String(r.memory) });
    // docker: without --memory-swap, swap is as large as the memory limit (total = 2x).
    const total = r.memorySwap ?? r.memory * 2;
    // The parent's file says whether the kernel has swap accounting (the node does not exist yet).
    if (existsSync(join(dir, '..', '..', 'memory.memsw.limit_in_bytes'))) ops.push({ write: join(dir, 'memory.memsw.limit_in_bytes'), value: String(total) });
    else if (r.memorySwap !== undefined && r.memorySwap !== -1) {
      throw new FerryError('UNSUPPORTED', `container ${id}: --memory-swap needs swap accounting (memory.memsw), which this kernel does not have`, {
        hint: 'boot the kernel with swapaccount=1, or run without --memory-swap',
      });
    }
  }
  if (r.memoryReservation !== undefined) ops.push({ write: join(need('memory', '--memory-reservation'), 'memory.soft_limit_in_bytes'), value: String(r.memoryReservation) });
  if (r.cpuQuota !== undefined) {
    const dir = need('cpu', '--cpus');
    ops.push({ write: join(dir, 'cpu.cfs_period_us'), value: String(r.cpuPeriod) }, { write: join(dir, 'cpu.cfs_quota_us'), value: String(r.cpuQuota) });
  }
  if (r.cpuShares !== undefined) ops.push({ write: join(need('cpu', '--cpu-shares'), 'cpu.shares'), value: String(r.cpuShares) });
  if (r.cpusetCpus !== undefined) ops.push({ write: join(need('cpuset', '--cpuset-cpus'), 'cpuset.cpus'), value: r.cpusetCpus });
  if (r.pidsLimit !== undefined) ops.push({ write: join(need('pids', '--pids-limit'), 'pids.max'), value: String(r.pidsLimit) });
  return ops;
}

/** The v2 files of a container's limits (docker's conversions); `available`: the controllers its parent passes down. */
export function v2Limits(dir: string, available: readonly string[], id: string, r: Resources): CgroupOp[] {
  const ops: CgroupOp[] = [];
  const need = (c: string, flag: string): void => {
    if (!available.includes(c)) throw missing(id, c, flag);
  };
  if (r.memory !== undefined) {
    need('memory', '--memory');
    ops.push({ write: join(dir, 'memory.max'), value: String(r.memory) });
    const swap = r.memorySwap === undefined ? String(r.memory) : r.memorySwap === -1 ? 'max' : String(r.memorySwap - r.memory);
    // Present when the kernel accounts swap (CONFIG_MEMCG_SWAP): a non-root node shows it
    // (ferry's own, or the one this process runs in; the root has none).
    const own = /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/';
    if (existsSync(join(dir, '..', 'memory.swap.max')) || existsSync(join(dir, '..', '..', own, 'memory.swap.max'))) ops.push({ write: join(dir, 'memory.swap.max'), value: swap });
  }
  if (r.memoryReservation !== undefined) {
    need('memory', '--memory-reservation');
    ops.push({ write: join(dir, 'memory.low'), value: String(r.memoryReservation) });
  }
  if (r.cpuQuota !== undefined) {
    need('cpu', '--cpus');
    ops.push({ write: join(dir, 'cpu.max'), value: `${r.cpuQuota} ${r.cpuPeriod}` });
  }
  if (r.cpuShares !== undefined) {
    need('cpu', '--cpu-shares');
    ops.push({ write: join(dir, 'cpu.weight'), value: String(sharesToWeight(r.cpuShares)) });
  }
  if (r.cpusetCpus !== undefined) {
    need('cpuset', '--cpuset-cpus');
    ops.push({ write: join(dir, 'cpuset.cpus'), value: r.cpusetCpus });
  }
  if (r.pidsLimit !== undefined) {
    need('pids', '--pids-limit');
    ops.push({ write: join(dir, 'pids.max'), value: String(r.pidsLimit) });
  }
  return ops;
}

export interface CgroupPlan {
  cgroups: ContainerCgroups;
  /** What the launcher does, in order, before the container starts. */
  ops: CgroupOp[];
}

/** The container's nodes, device rules and limits as a plan; throws when a needed controller is missing. */
export function planContainerCgroups(id: string, options: { privileged: boolean; resources?: Resources }): CgroupPlan {
  const cg = containerCgroups(id);
  const m = cgroupMounts();
  const available = cg.unified && m.v2 !== undefined
    ? readFileSync(join(m.v2, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter((c) => ['memory', 'cpu', 'cpuset', 'pids', 'io'].includes(c))
    : [];
  const ops = nodeOps(cg, available);
  if (cg.devices !== undefined && !options.privileged) {
    ops.push({ write: join(cg.devices, 'devices.deny'), value: 'a' });
    for (const rule of DEFAULT_DEVICE_RULES) ops.push({ write: join(cg.devices, 'devices.allow'), value: rule });
  }
  const r = options.resources ?? {};
  ops.push(...(cg.unified ? v2Limits(cg.v2!, available, id, r) : v1Limits(cg, id, r)));
  return { cgroups: cg, ops };
}

/** Where the kernel counts OOM kills of the container ("oom_kill N"). */
export function oomEventsFile(cg: ContainerCgroups): string | undefined {
  if (cg.unified) return cg.v2 !== undefined ? join(cg.v2, 'memory.events') : undefined;
  return cg.v1.memory !== undefined ? join(cg.v1.memory, 'memory.oom_control') : undefined;
}

/** Remove what is left of the container's nodes (the launcher removes them when it ends). */
export async function removeContainerCgroups(id: string): Promise<void> {
  for (const procs of containerCgroups(id).procs) {
    const dir = join(procs, '..');
    try {
      // Synchronous: one per controller at the end of every --rm run, each a thread-pool round trip otherwise.
      rmdirSync(dir);
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
