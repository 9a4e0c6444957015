import { UsageError } from '../errors.js';

/**
 * Resource limits of a container, as docker's flags give them (moby runconfig/opts), in the units
 * the cgroup files take. Absent fields mean "no limit". Pure: parsing only; cgroups.ts writes them.
 */
export interface Resources {
  /** --memory, bytes. */
  memory?: number;
  /** --memory-swap, bytes of memory + swap; -1 unlimited swap. */
  memorySwap?: number;
  /** --memory-reservation (a soft limit), bytes. */
  memoryReservation?: number;
  /** --cpus as a CFS quota over a 100 ms period. */
  cpuQuota?: number;
  cpuPeriod?: number;
  /** --cpu-shares (v1 cpu.shares; cpu.weight on v2 by docker's conversion). */
  cpuShares?: number;
  /** --cpuset-cpus, e.g. "0-1,3". */
  cpusetCpus?: string;
  /** --pids-limit; 0 or less: unlimited. */
  pidsLimit?: number;
}

export interface ResourceFlags {
  memory?: string;
  memorySwap?: string;
  memoryReservation?: string;
  cpus?: string;
  cpuShares?: string;
  cpusetCpus?: string;
  pidsLimit?: string;
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };

/** docker's RAMInBytes: "64m", "1.5g", "512k", "1048576" (binary units, optional trailing b). */
export function parseBytes(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtpb]?)b?$/i.exec(text.trim());
  if (m === null) throw new UsageError(`${flag} ${text}: not a size`, { hint: 'use a number with an optional unit: b, k, m, g (e.g. 256m)' });
  const bytes = Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!);
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`${flag} ${text}: too large`);
  return bytes;
}

/** docker refuses memory limits below 6 MiB: the container could not even start. */
const MIN_MEMORY = 6 * 1024 * 1024;
export const CPU_PERIOD = 100_000;

export function parseResources(flags: ResourceFlags): Resources {
  const r: Resources = {};
  if (flags.memory !== undefined) {
    r.memory = parseBytes(flags.memory, '--memory');
    if (r.memory > 0 && r.memory < MIN_MEMORY) throw new UsageError(`--memory ${flags.memory}: the minimum is 6m`);
    if (r.memory === 0) delete r.memory;
  }
  if (flags.memorySwap !== undefined) {
    if (flags.memorySwap.trim() === '-1') r.memorySwap = -1;
    else {
      r.memorySwap = parseBytes(flags.memorySwap, '--memory-swap');
      if (r.memory === undefined) throw new UsageError('--memory-swap needs --memory', { hint: 'it is the total of memory and swap' });
      if (r.memorySwap < r.memory) throw new UsageError(`--memory-swap ${flags.memorySwap} is smaller than --memory ${flags.memory}`, { hint: 'it is the total of memory and swap: give at least the memory limit, or -1 for unlimited swap' });
    }
  }
  if (flags.memoryReservation !== undefined) {
    r.memoryReservation = parseBytes(flags.memoryReservation, '--memory-reservation');
    if (r.memory !== undefined && r.memoryReservation > r.memory) throw new UsageError('--memory-reservation must be below --memory');
  }
  if (flags.cpus !== undefined) {
    const cpus = Number(flags.cpus);
    if (!/^\d+(\.\d+)?$/.test(flags.cpus.trim()) || !(cpus > 0)) throw new UsageError(`--cpus ${flags.cpus}: expected a positive number of CPUs, e.g. 0.5`);
    r.cpuPeriod = CPU_PERIOD;
    r.cpuQuota = Math.round(cpus * CPU_PERIOD);
    if (r.cpuQuota < 1000) throw new UsageError(`--cpus ${flags.cpus}: the minimum is 0.01`);
  }
  if (flags.cpuShares !== undefined) {
    const shares = Number(flags.cpuShares);
    if (!Number.isInteger(shares) || shares < 2 || shares > 262144) throw new UsageError(`--cpu-shares ${flags.cpuShares}: expected an integer from 2 to 262144 (default 1024)`);
    r.cpuShares = shares;
  }
  if (flags.cpusetCpus !== undefined) {
    if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(flags.cpusetCpus)) throw new UsageError(`--cpuset-cpus ${flags.cpusetCpus}: expected CPU numbers and ranges, e.g. 0-1,3`);
    r.cpusetCpus = flags.cpusetCpus;
  }
  if (flags.pidsLimit !== undefined) {
    const n = Number(flags.pidsLimit);
    if (!Number.isInteger(n)) throw new UsageError(`--pids-limit ${flags.pidsLimit}: expected an integer (0 or -1: unlimited)`);
    if (n > 0) r.pidsLimit = n;
  }
  return r;
}

/** docker's cpu.shares -> cgroup v2 cpu.weight (runc ConvertCPUSharesToCgroupV2Value). */
export function sharesToWeight(shares: number): number {
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}
