import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import { startRegistryServer } from '../../registry/server.js';
import { servedContent } from '../../verbs/serve.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface ServeFlags {
  listen: string;
  quiet?: boolean;
}

/** Loopback by default: the server has no authentication and speaks plain HTTP. */
export const DEFAULT_LISTEN = '127.0.0.1:5000';

/** `ADDR:PORT`, `[IPv6]:PORT`, or `:PORT` for every address (Go's convention). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(\d{1,5})$/.exec(text.trim());
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || port > 65535) {
    throw new UsageError(`--listen "${text}": expected ADDR:PORT`, { hint: `e.g. ${DEFAULT_LISTEN}, 0.0.0.0:5000 to serve other hosts, or :5000` });
  }
  const addr = m[1]!;
  return { host: addr === '' ? '0.0.0.0' : addr.replace(/^\[|\]$/g, ''), port };
}

/** `ferry serve [SOURCE...] [--listen ADDR:PORT]`: the store (or archives, layouts) as a read-only registry. */
export const registerServe: Register = (program) => {
  program
    .command('serve')
    .description('serve the store (or OCI layouts and archives) as a read-only registry')
    .argument('[sources...]', 'instead of the store: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF]')
    .option('--listen <addr:port>', `address to listen on (0.0.0.0:5000 serves other hosts)`, DEFAULT_LISTEN)
    .option('-q, --quiet', 'print only the address')
    .action(async (sources: string[], flags: ServeFlags, command: Command) => {
      const listen = parseListen(flags.listen);
      const warn = (m: string): void => void process.stderr.write(`warning: ${m}\n`);
      const { content, what, close } = await servedContent(sources, {
        store: () => storeFromCommand(command, { readOnly: true }),
        onWarning: warn,
        onPreparing: (store) => {
          // Compressing what needs it can take a while: say so before the first line.
          if (flags.quiet !== true) process.stderr.write(`preparing the store's images (layers kept only unpacked are compressed once, into ${store.root}/cache)\n`);
        },
      });
      const server = await startRegistryServer(content, listen);
      process.stdout.write(flags.quiet === true ? `${server.host}\n` : `serving ${what} read-only at http://${server.host}/v2/ (Ctrl-C stops)\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      await server.close();
      await close();
    });
};
