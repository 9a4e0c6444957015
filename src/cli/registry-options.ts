import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { RegistryClient, type RegistryClientOptions } from '../registry/client.js';
import { concurrencyLimit } from '../transfer/limiter.js';

interface GlobalRegistryFlags {
  insecureRegistry?: string[];
  caFile?: string;
}

/**
 * The global --insecure-registry / --ca-file flags as registry client options, with `jobs` blob
 * downloads and as many uploads at once (the limits made by transfer/, as the engine's own).
 */
export function registryClientOptions(command: Command, jobs = 4): RegistryClientOptions {
  const flags = command.optsWithGlobals<GlobalRegistryFlags>();
  const options: RegistryClientOptions = {
    insecureRegistries: flags.insecureRegistry ?? [],
    pullSlots: concurrencyLimit(jobs, '--jobs'),
    pushSlots: concurrencyLimit(jobs, '--jobs'),
  };
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
