import type { Command } from 'commander';
import { formatBytes } from '../../bundle/size.js';
import { FerryError, isFerryError } from '../../errors.js';
import { parsePlatform } from '../../oci/platform.js';
import { familiarReference, parseReference } from '../../oci/reference.js';
import { prune, refName } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface RmiFlags {
  platform?: string;
  prune?: boolean;
}

/** `ferry rmi IMAGE... [--platform] [--no-prune]`: untag, then remove what no image uses any more. */
export const registerRmi: Register = (program) => {
  program
    .command('rmi')
    .description('remove images from the store')
    .argument('<images...>', 'images in the store')
    .option('--platform <os/arch[/variant]>', 'only this platform of each image')
    .option('--no-prune', 'only remove the names; leave layers and blobs for a later ferry prune')
    .action(async (images: string[], flags: RmiFlags, command: Command) => {
      const store = await storeFromCommand(command);
      const platform = flags.platform === undefined ? undefined : parsePlatform(flags.platform);
      for (const image of images) {
        const removed = await store.refs.remove(refName(image), platform);
        if (removed.length === 0) {
          throw new FerryError('NOT_FOUND', `rmi ${image}: no such image in the store${flags.platform ? ` for ${flags.platform}` : ''}`, { hint: 'ferry images lists what is there' });
        }
        for (const r of removed) process.stdout.write(`untagged: ${familiarReference(parseReference(r.name))} (${r.platform.os}/${r.platform.architecture})\n`);
      }
      if (flags.prune === false) return;
      try {
        const result = await prune(store);
        process.stdout.write(`deleted: ${result.layersRemoved.length} layers, ${result.blobsRemoved.length} blobs, ${formatBytes(result.bytesFreed)} freed\n`);
      } catch (err) {
        if (!isFerryError(err, 'IN_USE')) throw err;
        process.stderr.write(`ferry: ${err.message}; layers stay until ferry prune\n`);
      }
    });
};
