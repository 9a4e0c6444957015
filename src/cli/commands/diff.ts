import type { Command } from 'commander';
import { containerDiff } from '../../runtime/containers.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry diff CONTAINER`: A/C/D lines, as docker diff prints them. */
export const registerDiff: Register = (program) => {
  program
    .command('diff')
    .description("show what a container changed in its filesystem (A added, C changed, D deleted)")
    .argument('<container>', 'container name or ID')
    .option('--json', 'print machine-readable JSON')
    .action(async (container: string, flags: { json?: boolean }, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const changes = await containerDiff(store, container);
      if (flags.json === true) process.stdout.write(`${JSON.stringify(changes, null, 2)}\n`);
      else process.stdout.write(changes.map((c) => `${c.kind} ${c.path}\n`).join(''));
    });
};
