import { createRequire } from 'node:module';

/**
 * Node built-ins that most commands never use, loaded on first use instead of at start: a static
 * import is paid by every command whose modules reach it. `ferry run` reached all of these, and
 * node:crypto alone (its webcrypto, key and KDF modules) took 6 ms of a run's start on Node 20,
 * 11 ms on the packed executable's Node 24; node:child_process (with node:net) 3 to 6 ms.
 */

// Built-ins resolve the same from anywhere; the packed executable routes this to scripts/pack/module-shim.js.
const requireBuiltin = createRequire('/');

function lazy<T>(id: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= requireBuiltin(id) as T);
}

export const nodeCrypto = lazy<typeof import('node:crypto')>('node:crypto');
export const nodeZlib = lazy<typeof import('node:zlib')>('node:zlib');
export const nodeWorkerThreads = lazy<typeof import('node:worker_threads')>('node:worker_threads');
export const nodeChildProcess = lazy<typeof import('node:child_process')>('node:child_process');
