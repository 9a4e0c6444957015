import { createRequire } from 'node:module';

/**
 * Node built-ins that most commands never use, loaded on first use instead of at start: a static
 * import is paid by every command whose modules reach it, and `ferry run` reached all of these
 * (node:child_process with node:net 3 to 6 ms, node:stream 2.5 ms). node:crypto, 6 to 11 ms, loads
 * the same way in oci/digest.ts, the one place that hashes with it.
 */

// Built-ins resolve the same from anywhere; the packed executable routes this to scripts/pack/module-shim.js.
const requireBuiltin = createRequire('/');

function lazy<T>(id: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= requireBuiltin(id) as T);
}

export const nodeZlib = lazy<typeof import('node:zlib')>('node:zlib');
export const nodeChildProcess = lazy<typeof import('node:child_process')>('node:child_process');
export const nodeStream = lazy<typeof import('node:stream')>('node:stream');
export const nodeStreamPromises = lazy<typeof import('node:stream/promises')>('node:stream/promises');
export const nodeV8 = lazy<typeof import('node:v8')>('node:v8');
export const nodeFsPromises = lazy<typeof import('node:fs/promises')>('node:fs/promises');
