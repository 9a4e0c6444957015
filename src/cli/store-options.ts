import type { Command } from 'commander';
import { openStore, type Store } from '../store/index.js';

interface GlobalStoreFlags {
  root?: string;
}

/** The store the global --root flag (else $FERRY_ROOT, else the default place) names. */
export async function storeFromCommand(command: Command, options: { readOnly?: boolean } = {}): Promise<Store> {
  const flags = command.optsWithGlobals<GlobalStoreFlags>();
  return openStore({ ...(flags.root === undefined ? {} : { root: flags.root }), ...(options.readOnly ? { readOnly: true } : {}) });
}
