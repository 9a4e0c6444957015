import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import { startRestartable } from '../../runtime/boot.js';
import { restartContainer, startContainer } from '../../runtime/containers.js';
import { storeFromCommand } from '../store-options.js';
import { reportLaunchError } from './run.js';
import type { Register } from './index.js';

/** `ferry start [-a] CONTAINER...`: run stopped containers again, with their writable layer. */
export const registerStart: Register = (program) => {
  program
    .command('start')
    .description('start stopped containers again (their writable layer, config, volumes, limits and ports are kept)')
    .argument('[container...]', 'container names or IDs')
    .option('-a, --attach', 'attach to the output and wait (one container); exit with its code')
    .option('--all-restartable', 'the boot entry point: start every container with --restart always, unless-stopped (not stopped by hand) or on-failure (running when the host went down)')
    .action(async (containers: string[], flags: { attach?: boolean; allRestartable?: boolean }, cmd: Command) => {
      if (flags.allRestartable === true) {
        if (containers.length > 0 || flags.attach === true) throw new UsageError('start --all-restartable: takes no containers and no -a');
      } else if (containers.length === 0) throw new UsageError('start: give a container (or --all-restartable)');
      if (flags.attach === true && containers.length > 1) throw new UsageError('start -a: give one container');
      const store = await storeFromCommand(cmd);
      if (flags.allRestartable === true) {
        const result = await startRestartable(store);
        for (const name of result.started) process.stdout.write(`${name}\n`);
        for (const f of result.failed) process.stderr.write(`ferry: start container ${f.name}: ${f.message}\n`);
        if (result.failed.length > 0) process.exitCode = 1;
        return;
      }
      try {
        for (const c of containers) {
          const result = await startContainer(store, c, { attach: flags.attach === true });
          if (result.exitCode !== undefined) process.exitCode = result.exitCode;
          else process.stdout.write(`${c}\n`);
        }
      } catch (err) {
        reportLaunchError(err);
      }
    });
};

/** `ferry restart [-t SECONDS] CONTAINER...` */
export const registerRestart: Register = (program) => {
  program
    .command('restart')
    .description('stop (StopSignal, then SIGKILL after the timeout) and start containers')
    .argument('<container...>', 'container names or IDs')
    .option('-t, --time <seconds>', 'seconds to wait before SIGKILL', '10')
    .action(async (containers: string[], flags: { time: string }, cmd: Command) => {
      const seconds = Number(flags.time);
      if (!Number.isFinite(seconds) || seconds < 0) throw new UsageError(`--time ${flags.time}: expected a number of seconds`);
      const store = await storeFromCommand(cmd);
      try {
        for (const c of containers) {
          await restartContainer(store, c, seconds);
          process.stdout.write(`${c}\n`);
        }
      } catch (err) {
        reportLaunchError(err);
      }
    });
};
