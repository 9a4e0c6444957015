import type { Command } from 'commander';
import { FerryError, isFerryError } from '../../errors.js';
import { formatPlatform, parsePlatform, platformMatches } from '../../oci/platform.js';
import { matchStoreImages, refName, type StoreMatch } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry tag SOURCE TARGET [--platform]`: another name for a store image (every platform it has). */
export const registerTag: Register = (program) => {
  program
    .command('tag')
    .description('give a store image another name')
    .argument('<source>', 'an image in the store: a name, or an image ID (a prefix of the manifest or config digest)')
    .argument('<target>', 'the new name, e.g. registry.example:5000/team/app:1.2')
    .option('--platform <os/arch[/variant]>', 'only this platform of the source')
    .action(async (source: string, target: string, flags: { platform?: string }, command: Command) => {
      const store = await storeFromCommand(command);
      const platform = flags.platform === undefined ? undefined : parsePlatform(flags.platform);
      const name = refName(target);
      let found: StoreMatch;
      try {
        found = await matchStoreImages(store, source);
      } catch (err) {
        if (!isFerryError(err, 'NOT_FOUND')) throw err;
        throw new FerryError('NOT_FOUND', `tag ${source}: no such image in the store`, { hint: 'ferry images lists what is there' });
      }
      // An ID with several names gives each platform once.
      const byPlatform = new Map(found.entries.filter((e) => platform === undefined || platformMatches(platform, e.platform)).map((e) => [formatPlatform(e.platform), e] as const));
      if (byPlatform.size === 0) throw new FerryError('NOT_FOUND', `tag ${source}: no such image in the store for ${flags.platform}`, { hint: 'ferry images lists what is there' });
      for (const e of byPlatform.values()) {
        const entry: Parameters<typeof store.setRef>[0] = { name, manifestDigest: e.manifestDigest, mediaType: e.mediaType, platform: e.platform };
        if (e.indexDigest !== undefined) entry.indexDigest = e.indexDigest;
        await store.setRef(entry);
      }
    });
};
