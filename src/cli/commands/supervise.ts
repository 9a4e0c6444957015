import { closeSync, writeSync } from 'node:fs';
import type { Command } from 'commander';
import { superviseContainer } from '../../runtime/supervisor.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** The status channel the starting ferry gave the supervisor (runtime/supervise.ts). */
const STATUS_FD = 3;

/**
 * `ferry supervise ID` (hidden): a container's supervisor, started by run -d / start for a
 * container with a restart policy or a health check; not for people to type.
 */
export const registerSupervise: Register = (program) => {
  program
    .command('supervise', { hidden: true })
    .description('supervise one container (started by ferry run -d and ferry start)')
    .argument('<id>', 'full container ID')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      let reported = false;
      process.exitCode = await superviseContainer(store, id, (started) => {
        if (reported) return;
        reported = true;
        writeSync(STATUS_FD, `${JSON.stringify(started)}\n`);
        closeSync(STATUS_FD);
      });
    });
};
