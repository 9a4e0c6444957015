import { readFile } from 'node:fs/promises';
import { availableParallelism, totalmem } from 'node:os';
import { join } from 'node:path';
import { containerCgroups } from './cgroups.js';
import type { ContainerInfo } from './state.js';

/**
 * `ferry stats`: a container's use of CPU, memory, PIDs, block and network I/O, read from its
 * cgroups (v1 or v2) and, for its own network namespace, /proc/PID/net/dev. CPU % is docker's:
 * the container's CPU time over the host's in the same interval, times the number of CPUs.
 */
export interface StatsSample {
  id: string;
  name: string;
  /** Cumulative CPU time of the container, nanoseconds. */
  cpuNs: number;
  /** Cumulative CPU time of the host (all CPUs), nanoseconds. */
  systemNs: number;
  memoryUsage: number;
  memoryLimit: number;
  pids: number;
  blockRead: number;
  blockWrite: number;
  /** undefined: the container shares the host's network (docker shows "--"). */
  netRx: number | undefined;
  netTx: number | undefined;
}

export interface ContainerStats extends Omit<StatsSample, 'cpuNs' | 'systemNs'> {
  cpuPercent: number;
  memoryPercent: number;
}

async function readOptional(path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENODEV') return undefined;
    throw err;
  }
}

function num(text: string | undefined): number {
  const n = Number(text?.trim());
  return Number.isFinite(n) ? n : 0;
}

/** "key value" lines (memory.stat, cpu.stat, memory.events) as a map. */
function keyValues(text: string | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of (text ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k !== undefined && k !== '' && v !== undefined) out.set(k, Number(v));
  }
  return out;
}

/** The host's CPU time from /proc/stat's first line, in nanoseconds (USER_HZ is 100 on Linux). */
async function systemCpuNs(): Promise<number> {
  const first = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
  const ticks = first.trim().split(/\s+/).slice(1, 8).reduce((a, b) => a + Number(b), 0);
  return ticks * 1e7;
}

/** A limit file says "max" or a huge number when unlimited: show the host's memory then, as docker does. */
function limitOrHost(value: number | undefined): number {
  const host = totalmem();
  return value === undefined || !Number.isFinite(value) || value <= 0 || value > host ? host : value;
}

async function netBytes(pid: number): Promise<{ rx: number; tx: number }> {
  let rx = 0;
  let tx = 0;
  const text = (await readOptional(`/proc/${pid}/net/dev`)) ?? '';
  for (const line of text.split('\n').slice(2)) {
    const [iface, rest] = line.split(':');
    if (rest === undefined || iface?.trim() === 'lo') continue;
    const f = rest.trim().split(/\s+/).map(Number);
    rx += f[0] ?? 0;
    tx += f[8] ?? 0;
  }
  return { rx, tx };
}

export async function sampleStats(info: ContainerInfo): Promise<StatsSample> {
  const cg = containerCgroups(info.record.id);
  let cpuNs: number;
  let memoryUsage: number;
  let memoryLimit: number;
  let pids: number;
  let blockRead = 0;
  let blockWrite = 0;
  if (cg.unified && cg.v2 !== undefined) {
    const dir = cg.v2;
    cpuNs = (keyValues(await readOptional(join(dir, 'cpu.stat'))).get('usage_usec') ?? 0) * 1000;
    const stat = keyValues(await readOptional(join(dir, 'memory.stat')));
    memoryUsage = Math.max(0, num(await readOptional(join(dir, 'memory.current'))) - (stat.get('inactive_file') ?? 0));
    const max = (await readOptional(join(dir, 'memory.max')))?.trim();
    memoryLimit = limitOrHost(max === undefined || max === 'max' ? undefined : Number(max));
    pids = num(await readOptional(join(dir, 'pids.current')));
    for (const line of ((await readOptional(join(dir, 'io.stat'))) ?? '').split('\n')) {
      blockRead += Number(/rbytes=(\d+)/.exec(line)?.[1] ?? 0);
      blockWrite += Number(/wbytes=(\d+)/.exec(line)?.[1] ?? 0);
    }
  } else {
    const cpuacct = cg.v1.cpuacct;
    cpuNs = num(await readOptional(cpuacct !== undefined ? join(cpuacct, 'cpuacct.usage') : undefined));
    const mem = cg.v1.memory;
    const stat = keyValues(await readOptional(mem !== undefined ? join(mem, 'memory.stat') : undefined));
    memoryUsage = Math.max(0, num(await readOptional(mem !== undefined ? join(mem, 'memory.usage_in_bytes') : undefined)) - (stat.get('total_inactive_file') ?? 0));
    memoryLimit = limitOrHost(mem !== undefined ? num(await readOptional(join(mem, 'memory.limit_in_bytes'))) : undefined);
    pids = num(await readOptional(cg.v1.pids !== undefined ? join(cg.v1.pids, 'pids.current') : undefined));
    const blk = cg.v1.blkio;
    for (const line of ((await readOptional(blk !== undefined ? join(blk, 'blkio.throttle.io_service_bytes') : undefined)) ?? '').split('\n')) {
      const [, op, bytes] = line.trim().split(/\s+/);
      if (op === 'Read') blockRead += Number(bytes);
      else if (op === 'Write') blockWrite += Number(bytes);
    }
  }
  const pid = info.state?.pid;
  const net = info.record.network === 'host' || pid === undefined ? undefined : await netBytes(pid);
  return {
    id: info.record.id,
    name: info.record.name,
    cpuNs,
    systemNs: await systemCpuNs(),
    memoryUsage,
    memoryLimit,
    pids,
    blockRead,
    blockWrite,
    netRx: net?.rx,
    netTx: net?.tx,
  };
}

/** docker's calculateCPUPercentUnix over two samples. */
export function statsBetween(before: StatsSample, after: StatsSample): ContainerStats {
  const cpuDelta = after.cpuNs - before.cpuNs;
  const systemDelta = after.systemNs - before.systemNs;
  const cpuPercent = cpuDelta > 0 && systemDelta > 0 ? (cpuDelta / systemDelta) * availableParallelism() * 100 : 0;
  const { cpuNs: _cpu, systemNs: _sys, ...rest } = after;
  return { ...rest, cpuPercent, memoryPercent: after.memoryLimit > 0 ? (after.memoryUsage / after.memoryLimit) * 100 : 0 };
}
