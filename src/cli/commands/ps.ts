import type { Command } from 'commander';
import { commandLine, listAllContainers } from '../../runtime/containers.js';
import { shortId, type ContainerInfo } from '../../runtime/state.js';
import { storeFromCommand } from '../store-options.js';
import { formatPort } from '../../runtime/ports.js';
import type { Register } from './index.js';

interface PsFlags {
  all?: boolean;
  quiet?: boolean;
  json?: boolean;
}

/** "3 seconds", "5 minutes", "2 hours", "4 days", as docker prints ages. */
export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const unit = (n: number, u: string): string => `${n} ${u}${n === 1 ? '' : 's'}`;
  if (s < 1) return 'Less than a second';
  if (s < 60) return unit(s, 'second');
  if (s < 3600) return unit(Math.round(s / 60), 'minute');
  if (s < 48 * 3600) return unit(Math.round(s / 3600), 'hour');
  return unit(Math.round(s / 86400), 'day');
}

/** docker's suffix: (healthy), (unhealthy), (health: starting). */
function healthText(c: ContainerInfo): string {
  // Only while a supervisor probes it: a stale result would look current.
  if (c.record.healthcheck === undefined || c.health === undefined || !c.supervised) return '';
  return c.health.Status === 'starting' ? ' (health: starting)' : ` (${c.health.Status})`;
}

function statusText(c: ContainerInfo, now: number): string {
  if (c.status === 'running') return `Up ${humanDuration(now - Date.parse(c.state?.startedAt ?? c.record.created))}${healthText(c)}`;
  if (c.status === 'created') return 'Created';
  const code = c.exitCode === null || c.exitCode === undefined ? '?' : String(c.exitCode);
  if (c.status === 'restarting') return `Restarting (${code}) ${humanDuration(now - Date.parse(c.finishedAt ?? c.record.created))} ago`;
  const oom = c.oomKilled === true ? ' (OOM killed)' : '';
  return c.finishedAt === undefined ? `Exited (${code})${oom}` : `Exited (${code}) ${humanDuration(now - Date.parse(c.finishedAt))} ago${oom}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]! + 2))).join('').trimEnd()).join('\n') + '\n';
}

function familiar(name: string): string {
  return name.replace(/^docker\.io\/(library\/)?/, '');
}

/** `ferry ps [-a] [-q] [--json]`: running containers, or all of them. */
export const registerPs: Register = (program) => {
  program
    .command('ps')
    .description('list containers (running ones; -a for all)')
    .option('-a, --all', 'also list containers that are not running')
    .option('-q, --quiet', 'print only the container IDs')
    .option('--json', 'print machine-readable JSON')
    .action(async (flags: PsFlags, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const all = await listAllContainers(store);
      // As docker: a container between two runs of its restart policy is listed with the running ones.
      const shown = flags.all === true ? all : all.filter((c) => c.status === 'running' || c.status === 'restarting');
      if (flags.json === true) {
        const json = shown.map((c) => ({
          id: c.record.id,
          name: c.record.name,
          image: c.record.image.name,
          imageDigest: c.record.image.digest,
          command: c.record.process.argv,
          created: c.record.created,
          status: c.status,
          exitCode: c.exitCode ?? null,
          OOMKilled: c.oomKilled === true,
          restartCount: c.restartCount,
          restartPolicy: c.record.restartPolicy?.name ?? 'no',
          ...(c.health !== undefined ? { health: c.health.Status } : {}),
          pid: c.status === 'running' ? c.state?.pid ?? null : null,
          startedAt: c.state?.startedAt ?? null,
          finishedAt: c.finishedAt ?? null,
          hostname: c.record.hostname,
          network: c.record.network,
          ports: c.status === 'running' ? c.state?.ports ?? [] : [],
        }));
        process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
        return;
      }
      if (flags.quiet === true) {
        for (const c of shown) process.stdout.write(`${shortId(c.record.id)}\n`);
        return;
      }
      const now = Date.now();
      // PORTS only when a listed container publishes some (most run on the host's network).
      const ports = (c: ContainerInfo): string => (c.status === 'running' ? (c.state?.ports ?? []).map(formatPort).join(', ') : '');
      const withPorts = shown.some((c) => ports(c) !== '');
      const rows = [['CONTAINER ID', 'IMAGE', 'COMMAND', 'CREATED', 'STATUS', ...(withPorts ? ['PORTS'] : []), 'NAMES']];
      for (const c of shown) {
        const command = commandLine(c.record);
        rows.push([
          shortId(c.record.id),
          familiar(c.record.image.name),
          `"${command.length > 30 ? `${command.slice(0, 29)}…` : command}"`,
          `${humanDuration(now - Date.parse(c.record.created))} ago`,
          statusText(c, now),
          ...(withPorts ? [ports(c)] : []),
          c.record.name,
        ]);
      }
      process.stdout.write(table(rows));
    });
};
