import type { Command } from 'commander';
import { removeContainer } from '../../runtime/containers.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry rm [-f] CONTAINER...`: drop containers and their writable layers; images stay. */
export const registerRm: Register = (program) => {
  program
    .command('rm')
    .description('remove containers and their writable layers (the images stay)')
    .argument('<container...>', 'container names or IDs')
    .option('-f, --force', 'kill a running container first')
    .option('-v, --volumes', "also remove the container's anonymous volumes (named ones stay)")
    .action(async (containers: string[], flags: { force?: boolean; volumes?: boolean }, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      for (const c of containers) {
        await removeContainer(store, c, flags.force === true, flags.volumes === true);
        process.stdout.write(`${c}\n`);
      }
    });
};
