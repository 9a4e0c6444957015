import type { Command } from 'commander';
import { formatBytes } from '../../bundle/size.js';
import { FerryError, isFerryError } from '../../errors.js';
import { formatPlatform, parsePlatform, platformMatches } from '../../oci/platform.js';
import { familiarReference, parseReference } from '../../oci/reference.js';
import { containersUsingImages, shortId } from '../../runtime/state.js';
import { matchStoreImages, prune, type RefEntry, type Store, type StoreMatch } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface RmiFlags {
  platform?: string;
  prune?: boolean;
  force?: boolean;
}

/**
 * As docker: a name whose image would be left with no name while a container uses it is refused
 * without -f (the container itself would carry on: its rootfs plan keeps the layers claimed).
 * Removing one of several names of the image is always fine.
 */
async function refuseIfContainersUse(store: Store, image: string, entries: readonly RefEntry[]): Promise<void> {
  const key = (e: RefEntry): string => `${e.name} ${formatPlatform(e.platform)}`;
  const removing = new Set(entries.map(key));
  const remaining = (await store.refs.list()).filter((r) => !removing.has(key(r)));
  const orphaned = new Set(entries.map((e) => e.manifestDigest).filter((d) => !remaining.some((r) => r.manifestDigest === d)));
  if (orphaned.size === 0) return;
  const users = await containersUsingImages(store.root, orphaned);
  if (users.length === 0) return;
  const names = [...new Set(entries.map((e) => familiarReference(parseReference(e.name))))].join(', ');
  const list = users.map((c) => `${c.record.name} (${shortId(c.record.id)}, ${c.status})`).join(', ');
  throw new FerryError('IN_USE', `rmi ${image}: image ${names} is used by ${users.length === 1 ? 'container' : 'containers'} ${list}`, {
    hint: `remove the container first (ferry rm ${users[0]!.record.name}), or remove the image name anyway with ferry rmi -f (the container keeps working)`,
  });
}

/** `ferry rmi IMAGE... [-f] [--platform] [--no-prune]`: untag, then remove what no image uses any more. */
export const registerRmi: Register = (program) => {
  program
    .command('rmi')
    .description('remove images from the store')
    .argument('<images...>', 'images in the store: names, or image IDs (a prefix of the manifest or config digest)')
    .option('--platform <os/arch[/variant]>', 'only this platform of each image')
    .option('-f, --force', 'remove an image ID that has several names (every name), and an image containers use (they keep working)')
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
        if (flags.force !== true) await refuseIfContainersUse(store, image, entries);
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
