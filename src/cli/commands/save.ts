import type { Command } from 'commander';
import { saveImages } from '../../verbs/save.js';
import { UsageError } from '../../errors.js';
import { parsePlatform } from '../../oci/platform.js';
import { familiarReference } from '../../oci/reference.js';
import { ProgressView } from '../progress.js';
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
      const platform = flags.platform === undefined ? undefined : parsePlatform(flags.platform);
      const view = new ProgressView(process.stderr, flags.quiet === true || flags.output === '-');
      try {
        const entries = await saveImages(names, flags.output === '-' ? process.stdout : flags.output!, {
          store: () => storeFromCommand(command, { readOnly: true }),
          onProgress: view.listener,
          ...(platform === undefined ? {} : { platform }),
        });
        view.finish();
        if (flags.quiet !== true && flags.output !== '-') {
          const tags = entries.flatMap((e) => (e.tags.length > 0 ? e.tags.map((t) => familiarReference(t)) : [e.image.digest]));
          process.stderr.write(`wrote ${flags.output}: ${tags.join(', ')}\n`);
        }
      } finally {
        view.finish();
      }
    });
};
