import type { Command } from 'commander';
import { commitContainer, type CommitOptions } from '../../runtime/commit.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';
import { collect } from './run.js';

interface CommitFlags {
  change: string[];
  message?: string;
  author?: string;
}

/** `ferry commit [-c INSTRUCTION]... [-m MSG] CONTAINER [IMAGE[:TAG]]`: the container's changes as a new store image. */
export const registerCommit: Register = (program) => {
  program
    .command('commit')
    .description("make a new store image from a container's changes")
    .argument('<container>', 'container name or ID')
    .argument('[image]', 'name for the new image, IMAGE[:TAG]')
    .option('-c, --change <instruction>', 'apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, LABEL, USER, WORKDIR, EXPOSE, VOLUME, STOPSIGNAL (repeatable)', collect, [])
    .option('-m, --message <text>', 'commit message (in the image history)')
    .option('-a, --author <name>', 'author of the new image')
    .action(async (container: string, image: string | undefined, flags: CommitFlags, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const options: CommitOptions = { changes: flags.change };
      if (image !== undefined) options.ref = image;
      if (flags.message !== undefined) options.message = flags.message;
      if (flags.author !== undefined) options.author = flags.author;
      const result = await commitContainer(store, container, options);
      process.stdout.write(`${result.manifestDigest}\n`);
    });
};
