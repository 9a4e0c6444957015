import { Command, CommanderError } from 'commander';
import { loadedNativeFs } from '../io/native.js';
import { versionText } from '../io/native-parts.js';
import { mark } from '../io/timing.js';
import { reportError } from './output.js';
import { loadCommands, type Register } from './commands/index.js';

export const VERSION = '0.1.0';

/** Global options that take a value, so the command name can be found without parsing. */
const GLOBAL_VALUE_OPTIONS = new Set(['--root', '--insecure-registry', '--ca-file']);

/** The subcommand argv names, if any: the first word that is not a global option or its value. */
export function commandName(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (GLOBAL_VALUE_OPTIONS.has(arg)) {
      i++;
      continue;
    }
    if (arg.startsWith('-')) continue;
    return arg;
  }
  return undefined;
}

/** Build the commander program with the given command modules registered. */
export function buildProgram(commands: readonly Register[]): Command {
  const program = new Command('ferry')
    .description('carry container images across an air gap: export, import, run')
    .version(versionText(VERSION), '--version')
    .option('--root <dir>', 'store root (default $FERRY_ROOT, /var/lib/ferry as root, else $XDG_DATA_HOME/ferry)')
    .option('--insecure-registry <host>', 'use plain HTTP for this registry host (repeatable)', collect)
    .option('--ca-file <file>', 'extra CA certificates (PEM) for registry TLS')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ outputError: () => undefined })
    // `ferry run IMAGE CMD --flag`: what follows the image is the container's (passThroughOptions),
    // which commander allows only when global options are positional.
    .enablePositionalOptions();
  for (const register of commands) register(program);
  // ...but every other command still takes the global options after its name too.
  for (const sub of program.commands) {
    if ((sub as unknown as { _passThroughOptions?: boolean })._passThroughOptions === true) continue;
    const has = (flag: string): boolean => sub.options.some((o) => o.long === flag);
    if (!has('--root')) sub.option('--root <dir>', 'store root (as the global option)');
    if (!has('--insecure-registry')) sub.option('--insecure-registry <host>', 'plain HTTP for this registry host (as the global option)', collect);
    if (!has('--ca-file')) sub.option('--ca-file <file>', 'extra CA certificates (as the global option)');
  }
  return program;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Resolves once everything written to `stream` has been handed to the OS (or the stream failed). */
function flushed(stream: NodeJS.WriteStream): Promise<void> {
  if (stream.writableLength === 0 || stream.destroyed) return Promise.resolve();
  return new Promise((resolvePromise) => {
    stream.once('drain', resolvePromise);
    stream.once('close', resolvePromise);
    stream.once('error', resolvePromise);
  });
}

/**
 * process.stdout and process.stderr as they get used. Node makes each on first access (4 to 6 ms
 * on Node 24: its stream class is loaded then), and one never used has nothing to flush, so the
 * exit asks only those some code opened (a container's output goes to the inherited fds, not
 * through them).
 */
function watchStdio(): () => NodeJS.WriteStream[] {
  const opened: NodeJS.WriteStream[] = [];
  for (const name of ['stdout', 'stderr'] as const) {
    const d = Object.getOwnPropertyDescriptor(process, name);
    if (d?.get === undefined || d.configurable !== true) {
      opened.push(process[name]);
      continue;
    }
    const get = d.get;
    Object.defineProperty(process, name, {
      configurable: true,
      enumerable: d.enumerable ?? true,
      get(): NodeJS.WriteStream {
        const stream = get.call(process) as NodeJS.WriteStream;
        if (!opened.includes(stream)) opened.push(stream);
        return stream;
      },
    });
  }
  return () => opened;
}

/**
 * The executables' entry: run the CLI, then exit at once with its code. Every command awaits its
 * own work (serve and supervise until they end), so nothing is left but the event loop's idle
 * handles and Node's teardown (joining V8's threads, freeing the heap: ~4 ms of every
 * `ferry run --rm`, issue 16). stdout and stderr are drained, 'exit' listeners run, and then,
 * when a command loaded the native addon anyway, the process ends with _exit; else process.exit.
 */
export async function runAndExit(argv: string[]): Promise<never> {
  const stdio = watchStdio();
  const code = await main(argv);
  const native = loadedNativeFs();
  if (native !== undefined) {
    process.exitCode = code;
    process.emit('exit', code);
  }
  await Promise.all(stdio().map(flushed));
  return native === undefined ? process.exit(code) : native.exitNow(code);
}

/** Run the CLI; resolves to the process exit code. Never throws. */
export async function main(argv: string[]): Promise<number> {
  try {
    mark('main');
    const program = buildProgram(await loadCommands(commandName(argv)));
    mark('modules');
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
