import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import { killContainer, stopContainer } from '../../runtime/containers.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry stop [-t SECONDS] CONTAINER...`: StopSignal (or SIGTERM), then SIGKILL after the timeout. */
export const registerStop: Register = (program) => {
  program
    .command('stop')
    .description('stop containers: their StopSignal (SIGTERM by default), then SIGKILL after a timeout')
    .argument('<container...>', 'container names or IDs')
    .option('-t, --time <seconds>', 'seconds to wait before SIGKILL', '10')
    .action(async (containers: string[], flags: { time: string }, cmd: Command) => {
      const seconds = Number(flags.time);
      if (!Number.isFinite(seconds) || seconds < 0) throw new UsageError(`--time ${flags.time}: expected a number of seconds`);
      const store = await storeFromCommand(cmd);
      for (const c of containers) {
        await stopContainer(store, c, seconds);
        process.stdout.write(`${c}\n`);
      }
    });
};

/** `ferry kill [-s SIGNAL] CONTAINER...`: a signal (default SIGKILL) to the container's init, passed on to its command. */
export const registerKill: Register = (program) => {
  program
    .command('kill')
    .description('send a signal to running containers (default SIGKILL)')
    .argument('<container...>', 'container names or IDs')
    .option('-s, --signal <signal>', 'signal name or number', 'SIGKILL')
    .action(async (containers: string[], flags: { signal: string }, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      for (const c of containers) {
        await killContainer(store, c, flags.signal);
        process.stdout.write(`${c}\n`);
      }
    });
};
