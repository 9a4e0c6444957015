import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FerryError } from '../errors.js';
import { ferryCommand } from '../io/native-parts.js';
import { containerPaths, shortId, type ContainerRecord } from './state.js';

/**
 * `ferry generate systemd`: units that start containers at boot and restart them when their
 * monitor ends badly. ferry has no daemon: a unit's main process is the container's supervisor
 * (or its C monitor), forked by `ferry start`, hence Type=forking with the PIDFile ferry writes.
 */
const run = promisify(execFile);

export const UNIT_DIR = '/etc/systemd/system';
export const BOOT_UNIT = 'ferry-containers.service';

/** systemd's quoting for one word of an Exec line. */
function quote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `"${word.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\$/g, '$$$$').replace(/%/g, '%%')}"`;
}

function execLine(root: string, args: readonly string[]): string {
  return [...ferryCommand(), '--root', root, ...args].map(quote).join(' ');
}

export function containerUnitName(record: ContainerRecord): string {
  return `ferry-${record.name}.service`;
}

/** The unit of one container (podman generate systemd's shape: ExecStart starts, ExecStop stops with the timeout). */
export function containerUnit(root: string, record: ContainerRecord, stopTimeoutSeconds: number): string {
  const paths = containerPaths(root, record.id);
  return `# ${containerUnitName(record)}: ferry container ${record.name} (${shortId(record.id)}), written by ferry generate systemd
[Unit]
Description=ferry container ${record.name}
Wants=network-online.target
After=network-online.target
RequiresMountsFor=${root}

[Service]
Type=forking
# ferry start forks the container's supervisor (or monitor) and writes its pid here.
PIDFile=${paths.mainPid}
ExecStart=${execLine(root, ['start', record.id])}
ExecStop=${execLine(root, ['stop', '-t', String(stopTimeoutSeconds), record.id])}
TimeoutStartSec=120
TimeoutStopSec=${stopTimeoutSeconds + 20}
# SIGTERM to the main process only (it stops the container with its stop signal), SIGKILL to what is left.
KillMode=mixed
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`;
}

/** ferry-containers.service: the boot entry point for every container with a restart policy. */
export function bootUnit(root: string): string {
  return `# ${BOOT_UNIT}: starts ferry's containers with --restart always, unless-stopped (not stopped by hand) or
# on-failure (running when the host went down) at boot; written by ferry generate systemd --boot
[Unit]
Description=ferry containers with a restart policy
Wants=network-online.target
After=network-online.target local-fs.target
RequiresMountsFor=${root}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=${execLine(root, ['start', '--all-restartable'])}
# The supervisors and monitors it forks stay in this unit: at shutdown each gets SIGTERM and
# stops its container with the container's stop signal, without marking it stopped by hand.
KillMode=control-group
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
`;
}

/** sd_booted(): systemd is the init system when /run/systemd/system exists. */
export function systemdRunning(): boolean {
  return existsSync('/run/systemd/system');
}

/** Write the unit under /etc/systemd/system, reload systemd and enable it; only where systemd is PID 1. */
export async function installUnit(name: string, text: string): Promise<string> {
  if (!systemdRunning()) {
    const init = (await readFile('/proc/1/comm', 'utf8')).trim();
    throw new FerryError('UNSUPPORTED', `install ${name}: systemd is not running here (PID 1 is ${init})`, {
      hint: 'run `ferry start --all-restartable` from the init system\'s boot scripts instead (see the README, "Back after a reboot")',
    });
  }
  const path = join(UNIT_DIR, name);
  await writeFile(path, text, { mode: 0o644 });
  await run('systemctl', ['daemon-reload']);
  await run('systemctl', ['enable', name]);
  return path;
}
