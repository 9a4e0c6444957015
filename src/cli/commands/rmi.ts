import type { Command } from 'commander';
import { formatBytes } from '../../bundle/size.js';
import { FerryError, isFerryError } from '../../errors.js';
import { formatPlatform, parsePlatform, platformMatches } from '../../oci/platform.js';
import { familiarReference, parseReference } from '../../oci/reference.js';
import { matchStoreImages, prune, type StoreMatch } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface RmiFlags {
  platform?: string;
  prune?: boolean;
  force?: boolean;
}

/** `ferry rmi IMAGE... [--platform] [--no-prune]`: untag, then remove what no image uses any more. */
export const registerRmi: Register = (program) => {
  program
    .command('rmi')
    .description('remove images from the store')
    .argument('<images...>', 'images in the store: names, or image IDs (a prefix of the manifest or config digest)')
    .option('--platform <os/arch[/variant]>', 'only this platform of each image')
    .option('-f, --force', 'remove an image ID that has several names (every name)')
    .option('--no-prune', 'only remove the names; leave layers and blobs for a later ferry prune')
    .action(async (images: string[], flags: RmiFlags, command: Command) => {
      const store = await storeFromCommand(command);
      const platform = flags.platform === undefined ? undefined : parsePlatform(flags.platform);
      for (const image of images) {
        let match: StoreMatch;
        try {
          match = await matchStoreImages(store, image);
        } catch (err) {
          if (!isFerryError(err, 'NOT_FOUND')) throw err;
          throw new FerryError('NOT_FOUND', `rmi ${image}: no such image in the store`, { hint: 'ferry images lists what is there' });
        }
        const entries = match.entries.filter((e) => platform === undefined || platformMatches(platform, e.platform));
        if (entries.length === 0) throw new FerryError('NOT_FOUND', `rmi ${image}: no such image in the store for ${flags.platform}`, { hint: 'ferry images lists what is there' });
        const names = [...new Set(entries.map((e) => e.name))];
        // As docker: an ID names an image, and removing all its names at once must be asked for.
        if (match.by !== 'name' && names.length > 1 && flags.force !== true) {
          throw new FerryError('IN_USE', `rmi ${image}: the image has ${names.length} names (${names.map((n) => familiarReference(parseReference(n))).join(', ')})`, {
            hint: 'remove them by name, or all at once with -f',
          });
        }
        for (const e of entries) {
          for (const r of await store.refs.remove(e.name, e.platform)) {
            process.stdout.write(`untagged: ${familiarReference(parseReference(r.name))} (${formatPlatform(r.platform)})\n`);
          }
        }
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
