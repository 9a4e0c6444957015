import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import { findContainer } from '../../runtime/state.js';
import { BOOT_UNIT, bootUnit, containerUnit, containerUnitName, installUnit } from '../../runtime/systemd.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface GenerateFlags {
  boot?: boolean;
  install?: boolean;
  time: string;
}

/** `ferry generate systemd [C | --boot] [--install] [-t SECONDS]` */
export const registerGenerate: Register = (program) => {
  const generate = program.command('generate').description('generate service files for the init system');
  generate
    .command('systemd')
    .description('print a systemd unit that runs a container (or, with --boot, ferry-containers.service, which starts every container with a restart policy at boot)')
    .argument('[container]', 'container name or ID')
    .option('--boot', `the boot entry point ${BOOT_UNIT} instead of one container's unit`)
    .option('--install', 'write it under /etc/systemd/system and enable it (systemd must be running)')
    .option('-t, --time <seconds>', 'stop timeout before SIGKILL (ExecStop)', '10')
    .action(async (container: string | undefined, flags: GenerateFlags, cmd: Command) => {
      const seconds = Number(flags.time);
      if (!Number.isInteger(seconds) || seconds < 0) throw new UsageError(`--time ${flags.time}: expected a whole number of seconds`);
      if ((container === undefined) === (flags.boot !== true)) throw new UsageError('generate systemd: give a container, or --boot', { hint: 'ferry generate systemd web, or ferry generate systemd --boot' });
      const store = await storeFromCommand(cmd);
      let name: string;
      let text: string;
      if (container === undefined) {
        name = BOOT_UNIT;
        text = bootUnit(store.root);
      } else {
        const info = await findContainer(store.root, container);
        name = containerUnitName(info.record);
        text = containerUnit(store.root, info.record, seconds);
      }
      if (flags.install === true) process.stdout.write(`${await installUnit(name, text)}\n`);
      else process.stdout.write(text);
    });
};
