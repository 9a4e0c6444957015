import { messageOf } from '../errors.js';
import type { Store } from '../store/index.js';
import { startContainer } from './containers.js';
import { NO_RESTART, restartsAtBoot } from './restart-policy.js';
import { listContainers } from './state.js';

/**
 * The boot entry point (`ferry start --all-restartable`, ferry-containers.service): after a
 * reboot or crash nothing of ferry runs, so this starts what docker's daemon would restart when
 * it comes up: `always`; `unless-stopped` unless stopped by hand; `on-failure` that was running
 * when the host went down, with retries left.
 */
export interface BootResult {
  started: string[];
  failed: Array<{ name: string; message: string }>;
}

export async function startRestartable(store: Store): Promise<BootResult> {
  const out: BootResult = { started: [], failed: [] };
  // Oldest first: a container that joins another's network finds it running.
  const all = (await listContainers(store.root)).reverse();
  for (const c of all) {
    if (c.status === 'running' || c.status === 'restarting' || c.supervised) continue;
    if (!restartsAtBoot(c.record.restartPolicy ?? NO_RESTART, c.stoppedByHand, c.exitCode, c.restartCount)) continue;
    try {
      await startContainer(store, c.record.id);
      out.started.push(c.record.name);
    } catch (err) {
      // One container that cannot start must not keep the others down: report it and go on.
      out.failed.push({ name: c.record.name, message: messageOf(err) });
    }
  }
  return out;
}
