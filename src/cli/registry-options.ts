import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { RegistryClient, type RegistryClientOptions } from '../registry/client.js';

interface GlobalRegistryFlags {
  insecureRegistry?: string[];
  caFile?: string;
}

/** The global --insecure-registry / --ca-file flags as registry client options. */
export function registryClientOptions(command: Command): RegistryClientOptions {
  const flags = command.optsWithGlobals<GlobalRegistryFlags>();
  const options: RegistryClientOptions = { insecureRegistries: flags.insecureRegistry ?? [] };
  if (flags.caFile !== undefined) options.caFile = flags.caFile;
  return options;
}

/** Run `fn` with a client built from the global flags, closing its connections afterwards. */
export async function withRegistryClient<T>(command: Command, fn: (client: RegistryClient) => Promise<T>): Promise<T> {
  const client = new RegistryClient(registryClientOptions(command));
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** `-j/--jobs N`: blobs moved to or from a registry at once. */
export function jobsFlag(text: string | undefined): number {
  if (text === undefined) return 4;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 32) throw new UsageError(`--jobs "${text}": expected a whole number from 1 to 32`);
  return n;
}
