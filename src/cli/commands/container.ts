import type { Command } from 'commander';
import { containerInspectJson } from '../../runtime/inspect-container.js';
import { findContainer } from '../../runtime/state.js';
import type { Store } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** docker inspect's JSON array for these containers. */
export async function printContainerInspect(store: Store, names: readonly string[]): Promise<void> {
  const out = [];
  for (const n of names) out.push(containerInspectJson(await findContainer(store.root, n)));
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

/** `ferry container inspect C...` (docker's management-command spelling). */
export const registerContainer: Register = (program) => {
  const container = program.command('container').description('manage containers (docker\'s "container" commands)');
  container
    .command('inspect')
    .description("show containers as docker inspect's JSON (State, Config, HostConfig, Mounts)")
    .argument('<container...>', 'container names or IDs')
    .action(async (names: string[], _flags: object, cmd: Command) => {
      await printContainerInspect(await storeFromCommand(cmd), names);
    });
};
