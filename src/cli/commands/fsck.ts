import type { Command } from 'commander';
import { FerryError } from '../../errors.js';
import { fsck } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry fsck [--repair] [--json]`: check the store; exit 1 while problems remain. */
export const registerFsck: Register = (program) => {
  program
    .command('fsck')
    .description('check the store: blob digests, layers, refs, leftovers')
    .option('--repair', 'remove bad blobs, layers and refs and leftovers (import the images again afterwards)')
    .option('--deep', "also reproduce every layer's original tar from its files and check its diffId (reads every layer)")
    .option('--json', 'print machine-readable JSON')
    .action(async (flags: { repair?: boolean; deep?: boolean; json?: boolean }, command: Command) => {
      const repair = flags.repair === true;
      const result = await fsck(await storeFromCommand(command, { readOnly: !repair }), { repair, deep: flags.deep === true });
      if (flags.json === true) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      else {
        for (const p of result.problems) process.stdout.write(`${p.repaired ? 'repaired' : 'problem'}: ${p.kind}: ${p.message}\n`);
        process.stdout.write(`checked ${result.blobsChecked} blobs, ${result.layersChecked} layers, ${result.refsChecked} images: ${result.problems.length} problems\n`);
      }
      const left = result.problems.filter((p) => !p.repaired).length;
      if (left > 0) {
        throw new FerryError('STORE_ERROR', `fsck: ${left} problem${left === 1 ? '' : 's'} in the store`, { hint: 'ferry fsck --repair removes what is broken; import the affected images again' });
      }
    });
};
