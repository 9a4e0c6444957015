import type { Command } from 'commander';
import { writeDockerArchive, type SaveImage } from '../../verbs/save.js';
import { FerryError, UsageError } from '../../errors.js';
import { formatPlatform, hostPlatform, parsePlatform, platformMatches, type Platform } from '../../oci/platform.js';
import { familiarReference, parseReference, type Reference } from '../../oci/reference.js';
import { ProgressView } from '../progress.js';
import { openSource, parseSourceSpec, type OpenedSource } from '../../verbs/locations.js';
import { openStoreName } from '../../verbs/store-names.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface SaveFlags {
  output?: string;
  platform?: string;
  quiet?: boolean;
}

/** `ferry save IMAGE... -o FILE.tar`: a docker-archive for docker load, podman load, ctr images import. */
export const registerSave: Register = (program) => {
  program
    .command('save')
    .description('write store images to a docker-archive (docker load, podman load, ctr images import)')
    .argument('<images...>', 'store images (redis:7), or oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF]')
    .requiredOption('-o, --output <file>', 'archive file to write, or - for stdout')
    .option('--platform <os/arch[/variant]>', 'the platform to save of multi-platform images (default: this host)')
    .option('-q, --quiet', 'no progress output')
    .action(async (names: string[], flags: SaveFlags, command: Command) => {
      if (flags.output === '-' && process.stdout.isTTY === true) {
        throw new UsageError('save: refusing to write an archive to a terminal', { hint: 'give -o FILE.tar, or redirect stdout' });
      }
      const platform: Platform = flags.platform === undefined ? hostPlatform() : parsePlatform(flags.platform);
      const view = new ProgressView(process.stderr, flags.quiet === true || flags.output === '-');
      const opened: OpenedSource[] = [];
      const entries: SaveImage[] = [];
      const add = (image: SaveImage['image'], tag: Reference | undefined): void => {
        const existing = entries.find((e) => e.image.digest === image.digest);
        const tags = tag === undefined || tag.tag === undefined ? [] : [tag];
        if (existing === undefined) entries.push({ image, tags });
        else existing.tags = [...existing.tags, ...tags.filter((t) => !existing.tags.some((x) => familiarReference(x) === familiarReference(t)))];
      };
      try {
        let store: Awaited<ReturnType<typeof storeFromCommand>> | undefined;
        for (const text of names) {
          if (parseSourceSpec(text).kind !== 'registry') {
            const source = await openSource(text, {
              platforms: [platform],
              client: () => {
                throw new UsageError('save reads images from the store or local files');
              },
            });
            opened.push(source);
            for (const s of source.images) add(s.image, s.image.ref ? parseReference(s.ref) : undefined);
            continue;
          }
          store ??= await storeFromCommand(command, { readOnly: true });
          const name = await openStoreName(store, text);
          const image = name.images.find((i) => platformMatches(platform, i.platform)) ?? (name.images.length === 1 && flags.platform === undefined ? name.images[0] : undefined);
          if (image === undefined) {
            throw new FerryError('PLATFORM_NOT_FOUND', `save ${text}: the store has it for ${name.images.map((i) => formatPlatform(i.platform)).join(', ')}, not ${formatPlatform(platform)}`, {
              hint: 'choose one with --platform',
            });
          }
          add(image, name.ref);
        }
        await writeDockerArchive(entries, flags.output === '-' ? process.stdout : flags.output!, { onProgress: view.listener });
        view.finish();
        if (flags.quiet !== true && flags.output !== '-') {
          const tags = entries.flatMap((e) => (e.tags.length > 0 ? e.tags.map((t) => familiarReference(t)) : [e.image.digest]));
          process.stderr.write(`wrote ${flags.output}: ${tags.join(', ')}\n`);
        }
      } finally {
        view.finish();
        for (const s of opened) await s.close();
      }
    });
};
