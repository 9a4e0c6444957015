import type { Command } from 'commander';
import { writeFileAtomic } from '../../io/atomic-file.js';
import { inventory } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry inventory [-o FILE]`: what the store holds, for `ferry export --since FILE` on the connected side. */
export const registerInventory: Register = (program) => {
  program
    .command('inventory')
    .description('write what the store holds, for export --since')
    .option('-o, --output <file>', 'write to this file instead of stdout')
    .action(async (flags: { output?: string }, command: Command) => {
      const text = `${JSON.stringify(await inventory(await storeFromCommand(command, { readOnly: true })), null, 2)}\n`;
      if (flags.output === undefined) process.stdout.write(text);
      else await writeFileAtomic(flags.output, text);
    });
};
