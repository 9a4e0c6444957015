import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import { commitContainer, type CommitOptions } from '../../verbs/commit.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';
import { collect } from './run.js';

interface CommitFlags {
  change: string[];
  message?: string;
  author?: string;
  /** true (bare flag or default), or the text after it: "false", "=false" (-p=false), or an argument it swallowed. */
  pause?: boolean | string;
}

/** Go's strconv.ParseBool, which docker's flags use. */
function parseBool(text: string): boolean | undefined {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(text)) return false;
  return undefined;
}

/**
 * docker spells it `--pause=false` / `-p=false`; commander gives an optional value the next
 * argument too (`--pause web img`), which for docker is a positional one: give it back.
 */
function pauseAndArguments(flags: CommitFlags, container: string, image: string | undefined): { pause: boolean; container: string; image: string | undefined } {
  const value = flags.pause;
  if (typeof value !== 'string') return { pause: value !== false, container, image };
  const word = value.startsWith('=') ? value.slice(1) : value;
  const pause = parseBool(word);
  if (pause !== undefined) return { pause, container, image };
  if (value.startsWith('=') || image !== undefined) throw new UsageError(`commit: --pause takes true or false, not "${word}"`);
  return { pause: true, container: value, image: container };
}

/** `ferry commit [-c INSTRUCTION]... [-m MSG] [-p=false] CONTAINER [IMAGE[:TAG]]`: the container's changes as a new store image. */
export const registerCommit: Register = (program) => {
  program
    .command('commit')
    .description("make a new store image from a container's changes")
    .argument('<container>', 'container name or ID')
    .argument('[image]', 'name for the new image, IMAGE[:TAG]')
    .option('-c, --change <instruction>', 'apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, LABEL, USER, WORKDIR, EXPOSE, VOLUME, STOPSIGNAL (repeatable)', collect, [])
    .option('-m, --message <text>', 'commit message (in the image history)')
    .option('-a, --author <name>', 'author of the new image')
    .option('-p, --pause [bool]', 'stop the container\'s processes while its files are read (default true; --pause=false commits it running)', true)
    .action(async (containerArg: string, imageArg: string | undefined, flags: CommitFlags, cmd: Command) => {
      const { pause, container, image } = pauseAndArguments(flags, containerArg, imageArg);
      const store = await storeFromCommand(cmd);
      const options: CommitOptions = { changes: flags.change, pause };
      if (image !== undefined) options.ref = image;
      if (flags.message !== undefined) options.message = flags.message;
      if (flags.author !== undefined) options.author = flags.author;
      const result = await commitContainer(store, container, options);
      process.stdout.write(`${result.manifestDigest}\n`);
    });
};
