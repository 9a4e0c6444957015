import type { Command } from 'commander';
import { access } from '../io/fs-promises.js';
import { join } from 'node:path';
import { openStore, resolveStoreRoot, type Store } from '../store/store.js';

interface GlobalStoreFlags {
  root?: string;
}

/** The store the global --root flag (else $FERRY_ROOT, else the default place) names. */
export async function storeFromCommand(command: Command, options: { readOnly?: boolean } = {}): Promise<Store> {
  const flags = command.optsWithGlobals<GlobalStoreFlags>();
  return openStore({ ...(flags.root === undefined ? {} : { root: flags.root }), ...(options.readOnly ? { readOnly: true } : {}) });
}

/**
 * The store, read-only, when one exists at the chosen root; undefined otherwise. For commands
 * that only consult the store (export on a connected machine must not create one).
 */
export async function existingStore(command: Command): Promise<Store | undefined> {
  const flags = command.optsWithGlobals<GlobalStoreFlags>();
  const options = flags.root === undefined ? {} : { root: flags.root };
  try {
    await access(join(resolveStoreRoot(options), 'refs.json'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return openStore({ ...options, readOnly: true });
}
