import { Command, CommanderError } from 'commander';
import { reportError } from './output.js';
import { COMMANDS } from './commands/index.js';

export const VERSION = '0.1.0';

/** Build the commander program; every command module registers itself through COMMANDS. */
export function buildProgram(): Command {
  const program = new Command('ferry')
    .description('carry container images across an air gap: export, import, run')
    .version(VERSION, '--version')
    .option('--root <dir>', 'store root (default $FERRY_ROOT, /var/lib/ferry as root, else $XDG_DATA_HOME/ferry)')
    .option('--insecure-registry <host>', 'use plain HTTP for this registry host (repeatable)', collect, [])
    .option('--ca-file <file>', 'extra CA certificates (PEM) for registry TLS')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ outputError: () => undefined });
  for (const register of COMMANDS) register(program);
  return program;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Run the CLI; resolves to the process exit code. Never throws. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      process.stderr.write(`ferry: ${err.message.replace(/^error: /, '')}\nhint: see 'ferry --help'\n`);
      return 2;
    }
    return reportError(err, (line) => process.stderr.write(`${line}\n`));
  }
}
