import type { Command } from 'commander';
import { formatBytes } from '../../bundle/size.js';
import { prune } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry prune [--dry-run] [--json]`: remove blobs and layers no image or container uses. */
export const registerPrune: Register = (program) => {
  program
    .command('prune')
    .description('remove unreferenced blobs and layers')
    .option('--dry-run', 'only list what would be removed')
    .option('--json', 'print machine-readable JSON')
    .action(async (flags: { dryRun?: boolean; json?: boolean }, command: Command) => {
      const result = await prune(await storeFromCommand(command), { dryRun: flags.dryRun === true });
      if (flags.json === true) {
        process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        return;
      }
      const verb = result.dryRun ? 'would remove' : 'removed';
      for (const l of result.layersRemoved) process.stdout.write(`${verb} layer ${l}\n`);
      for (const b of result.blobsRemoved) process.stdout.write(`${verb} blob ${b}\n`);
      process.stdout.write(`${verb} ${result.layersRemoved.length} layers, ${result.blobsRemoved.length} blobs: ${formatBytes(result.bytesFreed)}\n`);
    });
};
