import type { Command } from 'commander';
import { execInContainer, type ExecOptions } from '../../runtime/containers.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';
import { collect, reportLaunchError } from './run.js';

interface ExecFlags {
  interactive?: boolean;
  tty?: boolean;
  user?: string;
  env: string[];
  workdir?: string;
}

/** `ferry exec [-i] [-t] [-u USER] [-e K=V] [-w DIR] CONTAINER COMMAND...`: flags after the container belong to the command. */
export const registerExec: Register = (program) => {
  program
    .command('exec')
    .description('run a command in a running container (same namespaces, environment and working directory)')
    .argument('<container>', 'container name or ID')
    .argument('<command...>', 'command and arguments')
    .option('-i, --interactive', 'keep stdin attached')
    .option('-t, --tty', 'give the command a terminal (pty)')
    .option('-u, --user <user[:group]>', 'user (name or uid) and group, looked up in the container')
    .option('-e, --env <NAME[=VALUE]>', 'set an environment variable (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'working directory (default: the container\'s)')
    .passThroughOptions()
    .action(async (container: string, command: string[], flags: ExecFlags, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const options: ExecOptions = { argv: command, env: flags.env, tty: flags.tty === true, interactive: flags.interactive === true };
      if (flags.user !== undefined) options.user = flags.user;
      if (flags.workdir !== undefined) options.workdir = flags.workdir;
      try {
        process.exitCode = await execInContainer(store, container, options);
      } catch (err) {
        reportLaunchError(err);
      }
    });
};
