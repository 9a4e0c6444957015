import type { Command } from 'commander';
import { FerryError } from '../../errors.js';
import { parsePlatform } from '../../oci/platform.js';
import { refName } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry tag SOURCE TARGET [--platform]`: another name for a store image (every platform it has). */
export const registerTag: Register = (program) => {
  program
    .command('tag')
    .description('give a store image another name')
    .argument('<source>', 'an image in the store')
    .argument('<target>', 'the new name, e.g. registry.example:5000/team/app:1.2')
    .option('--platform <os/arch[/variant]>', 'only this platform of the source')
    .action(async (source: string, target: string, flags: { platform?: string }, command: Command) => {
      const store = await storeFromCommand(command);
      const entries = await store.refs.find(refName(source), flags.platform === undefined ? undefined : parsePlatform(flags.platform));
      if (entries.length === 0) {
        throw new FerryError('NOT_FOUND', `tag ${source}: no such image in the store${flags.platform ? ` for ${flags.platform}` : ''}`, { hint: 'ferry images lists what is there' });
      }
      const name = refName(target);
      for (const e of entries) {
        const entry: Parameters<typeof store.setRef>[0] = { name, manifestDigest: e.manifestDigest, mediaType: e.mediaType, platform: e.platform };
        if (e.indexDigest !== undefined) entry.indexDigest = e.indexDigest;
        await store.setRef(entry);
      }
    });
};
