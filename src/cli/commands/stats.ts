import type { Command } from 'commander';
import { listAllContainers } from '../../runtime/containers.js';
import { findContainer, shortId, type ContainerInfo } from '../../runtime/state.js';
import { sampleStats, statsBetween, type ContainerStats } from '../../runtime/stats.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface StatsFlags {
  stream: boolean;
  json?: boolean;
}

/** docker's units: binary for memory ("50MiB"), decimal for I/O ("1.2kB"). */
function binary(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(2).replace(/\.?0+$/, '')}${units[i]}`;
}

function decimal(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(3).replace(/\.?0+$/, '')}${units[i]}`;
}

function table(rows: ContainerStats[]): string {
  const lines = [['CONTAINER ID', 'NAME', 'CPU %', 'MEM USAGE / LIMIT', 'MEM %', 'NET I/O', 'BLOCK I/O', 'PIDS']];
  for (const s of rows) {
    lines.push([
      shortId(s.id),
      s.name,
      `${s.cpuPercent.toFixed(2)}%`,
      `${binary(s.memoryUsage)} / ${binary(s.memoryLimit)}`,
      `${s.memoryPercent.toFixed(2)}%`,
      s.netRx === undefined || s.netTx === undefined ? '--' : `${decimal(s.netRx)} / ${decimal(s.netTx)}`,
      `${decimal(s.blockRead)} / ${decimal(s.blockWrite)}`,
      String(s.pids),
    ]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  return lines.map((l) => l.map((c, i) => (i === l.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('')).join('\n') + '\n';
}

async function measure(containers: ContainerInfo[], intervalMs: number): Promise<ContainerStats[]> {
  const before = await Promise.all(containers.map(sampleStats));
  await new Promise((r) => setTimeout(r, intervalMs));
  const after = await Promise.all(containers.map(sampleStats));
  return after.map((a, i) => statsBetween(before[i]!, a));
}

/** `ferry stats [--no-stream] [--json] [CONTAINER...]`: docker's columns, from each container's cgroups. */
export const registerStats: Register = (program) => {
  program
    .command('stats')
    .description('show running containers\' CPU, memory, network and block I/O, and PIDs (from their cgroups)')
    .argument('[container...]', 'container names or IDs (default: every running container)')
    .option('--no-stream', 'print one sample and exit')
    .option('--json', 'print machine-readable JSON (one sample)')
    .action(async (names: string[], flags: StatsFlags, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const pick = async (): Promise<ContainerInfo[]> =>
        names.length > 0
          ? (await Promise.all(names.map((n) => findContainer(store.root, n)))).filter((c) => c.status === 'running')
          : (await listAllContainers(store)).filter((c) => c.status === 'running');
      if (flags.json === true || !flags.stream) {
        const stats = await measure(await pick(), 1000);
        process.stdout.write(flags.json === true ? `${JSON.stringify(stats, null, 2)}\n` : table(stats));
        return;
      }
      for (;;) {
        const stats = await measure(await pick(), 1000);
        // Clear the screen and redraw, as docker stats does.
        process.stdout.write(`\x1b[2J\x1b[H${table(stats)}`);
      }
    });
};
