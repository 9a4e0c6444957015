import { FerryError } from '../errors.js';
import { ferryCommand } from '../io/native-parts.js';
import { LaunchError, spawnWithStatus } from './launcher.js';
import type { ContainerRecord } from './state.js';

/**
 * Starting a container's supervisor: `ferry supervise ID`, a detached process of its own (its
 * own session, outliving the ferry that started it), which starts the container through the same
 * path as `ferry start`, restarts it by its policy and runs its health checks (supervisor.ts).
 * It reports on its fd 3 whether the first start worked, so `ferry run -d` fails as before
 * (125/126/127) when the command cannot start.
 */

/** What the supervisor writes on fd 3, one JSON line. */
export type SupervisorStart = { ok: true } | { ok: false; message: string; exitCode: number; hint?: string };

/** Only containers with something to supervise get a supervisor (one Node process each). */
export function needsSupervisor(record: ContainerRecord): boolean {
  return (record.restartPolicy !== undefined && record.restartPolicy.name !== 'no') || record.healthcheck !== undefined;
}

/** Spawn the supervisor of container `id` and wait until the container's command runs (or failed to start). */
export async function spawnSupervisor(root: string, id: string, logFd: number): Promise<{ pid: number }> {
  const [command, ...args] = ferryCommand() as [string, ...string[]];
  const what = `start the supervisor of container ${id.slice(0, 12)}`;
  const { child, exited, sock, status } = spawnWithStatus(command, [...args, '--root', root, 'supervise', id], ['ignore', logFd, logFd], undefined, what);
  if (child.pid === undefined) throw new FerryError('RUNTIME_ERROR', `${what}: it did not start`);
  let text: string;
  try {
    text = await status;
  } finally {
    sock.destroy();
  }
  const line = text.split('\n')[0] ?? '';
  if (line === '') {
    const code = await exited;
    throw new LaunchError(`the supervisor of container ${id.slice(0, 12)} exited with status ${code} before starting it (see ferry logs)`, 125);
  }
  const started = JSON.parse(line) as SupervisorStart;
  if (!started.ok) {
    await exited;
    throw new LaunchError(started.message, started.exitCode);
  }
  // It lives on in its own session; this ferry may exit.
  child.unref();
  return { pid: child.pid };
}
