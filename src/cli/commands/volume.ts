import type { Command } from 'commander';
import { anonymousVolumeName, checkVolumeName, ensureVolume, listVolumes, loadVolume, noSuchVolume, pruneVolumes, removeVolume, volumeJson } from '../../runtime/volumes.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry volume create|ls|inspect|rm|prune`: docker's local volumes, ROOT/volumes/NAME/_data. */
export const registerVolume: Register = (program) => {
  const volume = program.command('volume').description('manage volumes (ROOT/volumes/NAME/_data; -v NAME:/path on run)');
  volume
    .command('create')
    .description('create a volume (empty; a new volume first used by run is filled from the image instead)')
    .argument('[name]', 'the volume name (default: a random one)')
    .action(async (name: string | undefined, _flags: object, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const chosen = name === undefined ? anonymousVolumeName() : checkVolumeName(name);
      await ensureVolume(store, chosen);
      process.stdout.write(`${chosen}\n`);
    });
  volume
    .command('ls')
    .description('list volumes')
    .option('-q, --quiet', 'print only the names')
    .option('--json', 'print machine-readable JSON')
    .action(async (flags: { quiet?: boolean; json?: boolean }, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const all = await listVolumes(store.root);
      if (flags.json === true) process.stdout.write(`${JSON.stringify(all.map((v) => volumeJson(store.root, v)), null, 2)}\n`);
      else if (flags.quiet === true) for (const v of all) process.stdout.write(`${v.name}\n`);
      else process.stdout.write(['DRIVER    VOLUME NAME', ...all.map((v) => `local     ${v.name}`)].join('\n') + '\n');
    });
  volume
    .command('inspect')
    .description("show volumes as docker's JSON")
    .argument('<name...>', 'volume names')
    .action(async (names: string[], _flags: object, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const out = [];
      for (const n of names) {
        const v = await loadVolume(store.root, checkVolumeName(n));
        if (v === undefined) throw noSuchVolume(n);
        out.push(volumeJson(store.root, v));
      }
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    });
  volume
    .command('rm')
    .description('remove volumes (refused while a container uses one)')
    .argument('<name...>', 'volume names')
    .option('-f, --force', 'no error for a volume that does not exist')
    .action(async (names: string[], flags: { force?: boolean }, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      for (const n of names) {
        if (!(await removeVolume(store, checkVolumeName(n))) && flags.force !== true) throw noSuchVolume(n);
        process.stdout.write(`${n}\n`);
      }
    });
  volume
    .command('prune')
    .description('remove unused anonymous volumes (-a: every unused volume)')
    .option('-a, --all', 'named volumes too')
    .option('-f, --force', "don't ask (ferry never asks; accepted for docker's scripts)")
    .action(async (flags: { all?: boolean }, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const removed = await pruneVolumes(store, flags.all === true);
      process.stdout.write(removed.length === 0 ? 'Total reclaimed volumes: 0\n' : `Deleted Volumes:\n${removed.map((n) => `${n}\n`).join('')}`);
    });
};
