import { readFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { sh } from './measure.js';

async function firstLine(command: string): Promise<string> {
  try {
    return (await sh(command)).split('\n')[0]!.trim();
  } catch (err) {
    return `unavailable (${(err as Error).message.split('\n')[0]})`;
  }
}

/** What the figures were measured on: they only mean something next to this. */
export async function describeMachine(workDir: string, zstdNapiVersion: string): Promise<string[]> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown';
  const disk = await firstLine(
    `src=$(findmnt -no SOURCE -T ${workDir}); fs=$(findmnt -no FSTYPE -T ${workDir}); dev=$(lsblk -no PKNAME "$src" 2>/dev/null | head -1); [ -n "$dev" ] || dev=$(basename "$src"); ` +
      `rota=$(cat /sys/block/$dev/queue/rotational 2>/dev/null || echo '?'); echo "$src ($fs, rotational=$rota, $(df -h --output=size ${workDir} | tail -1 | tr -d ' ') total)"`,
  );
  return [
    `- CPU: ${model}, ${cpus().length} cores`,
    `- RAM: ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `- kernel: Linux ${release()}`,
    `- disk of the work directory ${workDir}: ${disk}`,
    `- load average at start: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (the machine is shared: compare ratios, not seconds)`,
    `- node ${process.version}, zstd-napi ${zstdNapiVersion}`,
    `- ${await firstLine('zstd --version')}; ${await firstLine('tar --version')}`,
    `- ${await firstLine('skopeo --version')}; ${await firstLine('podman --version')}; ${await firstLine('runc --version')}`,
    `- registry: ${await firstLine("dpkg-query -W -f '${Package} ${Version}' docker-registry")}`,
  ];
}
