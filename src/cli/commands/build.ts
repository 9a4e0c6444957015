import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import { parsePlatform } from '../../oci/platform.js';
import { buildImage, type BuildOptions } from '../../verbs/build.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';
import { collect } from './run.js';

interface BuildFlags {
  tag: string[];
  file?: string;
  buildArg: string[];
  target?: string;
  cache: boolean;
  network?: string;
  label: string[];
  iidfile?: string;
  quiet?: boolean;
  progress?: string;
  platform?: string;
}

function pairs(list: readonly string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0) {
      // docker: `--build-arg NAME` takes NAME's value from the environment.
      const value = flag === '--build-arg' ? process.env[item] : undefined;
      if (value === undefined) throw new UsageError(`${flag} ${item}: expected KEY=VALUE`);
      out[item] = value;
      continue;
    }
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

function sourceDateEpoch(): number | undefined {
  const text = process.env.SOURCE_DATE_EPOCH;
  if (text === undefined || text === '') return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`SOURCE_DATE_EPOCH=${text}: expected seconds since 1970`);
  return Number(text);
}

/** `ferry build [-t NAME[:TAG]]... [-f Dockerfile] [--build-arg K=V]... CONTEXT`: an image from a Dockerfile, offline. */
export const registerBuild: Register = (program) => {
  program
    .command('build')
    .description('build an image from a Dockerfile into the store (offline: bases come from the store)')
    .argument('<context>', 'the build context directory')
    .option('-t, --tag <name>', 'name the image NAME[:TAG] (repeatable)', collect, [])
    .option('-f, --file <path>', 'the Dockerfile (default CONTEXT/Dockerfile; - reads it from stdin)')
    .option('--build-arg <k=v>', 'set a build argument (repeatable)', collect, [])
    .option('--target <stage>', 'build up to this stage')
    .option('--no-cache', 'do not use the build cache')
    .option('--network <mode>', 'network of RUN steps: none (default) or host')
    .option('--label <k=v>', 'add a label to the image (repeatable)', collect, [])
    .option('--iidfile <file>', 'write the image ID to this file')
    .option('--platform <os/arch>', 'the platform to build for (bases must be in the store for it)')
    .option('-q, --quiet', 'print only the image ID')
    .option('--progress <mode>', 'output: plain (the default; steps as lines)')
    .action(async (context: string, flags: BuildFlags, cmd: Command) => {
      if (flags.network !== undefined && flags.network !== 'none' && flags.network !== 'host') {
        throw new UsageError(`build --network ${flags.network}: expected none or host`);
      }
      if (flags.progress !== undefined && !['plain', 'auto', 'tty', 'quiet'].includes(flags.progress)) {
        throw new UsageError(`build --progress ${flags.progress}: expected plain`);
      }
      const quiet = flags.quiet === true || flags.progress === 'quiet';
      const store = await storeFromCommand(cmd);
      const options: BuildOptions = {
        context,
        tags: flags.tag,
        buildArgs: pairs(flags.buildArg, '--build-arg'),
        labels: pairs(flags.label, '--label'),
        noCache: !flags.cache,
        log: quiet ? () => undefined : (line) => process.stdout.write(`${line}\n`),
        runStdio: quiet ? ['ignore', 'ignore'] : ['inherit', 'inherit'],
      };
      if (flags.file === '-') {
        // docker build -f - CONTEXT: the Dockerfile comes from stdin.
        const chunks: Buffer[] = [];
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
        options.dockerfileText = Buffer.concat(chunks).toString('utf8');
        options.dockerfile = '-';
      } else if (flags.file !== undefined) options.dockerfile = flags.file;
      if (flags.target !== undefined) options.target = flags.target;
      if (flags.network !== undefined) options.network = flags.network as 'none' | 'host';
      if (flags.platform !== undefined) options.platform = parsePlatform(flags.platform);
      const epoch = sourceDateEpoch();
      if (epoch !== undefined) options.sourceDateEpoch = epoch;
      const result = await buildImage(store, options);
      if (flags.iidfile !== undefined) {
        await writeFile(flags.iidfile, result.manifestDigest);
      }
      process.stdout.write(`${result.manifestDigest}\n`);
    });
};
