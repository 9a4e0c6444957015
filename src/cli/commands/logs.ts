import type { Command } from 'commander';
import { containerLogs } from '../../runtime/containers.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry logs [-f] CONTAINER`: the output of a detached container. */
export const registerLogs: Register = (program) => {
  program
    .command('logs')
    .description('print the output of a container started with -d')
    .argument('<container>', 'container name or ID')
    .option('-f, --follow', 'keep printing new output until the container stops')
    .action(async (container: string, flags: { follow?: boolean }, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      await containerLogs(
        store,
        container,
        (chunk) =>
          new Promise<void>((resolve, reject) => {
            process.stdout.write(chunk, (err) => (err ? reject(err) : resolve()));
          }),
        { follow: flags.follow === true },
      );
    });
};
