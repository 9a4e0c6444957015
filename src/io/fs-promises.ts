import type * as FsPromises from 'node:fs/promises';
import { nodeFsPromises } from './builtins.js';

/**
 * node:fs/promises, loaded on the first call. On Node 24 loading it costs ~3 ms (it brings
 * readline, the REPL's history, fs watchers and perf_hooks with it), and a container start calls
 * none of these: the modules `ferry run` loads import them from here, the rest from node:fs/promises.
 */
function deferred<K extends keyof typeof FsPromises>(name: K): (typeof FsPromises)[K] {
  return ((...args: unknown[]) => (nodeFsPromises()[name] as (...a: unknown[]) => unknown)(...args)) as (typeof FsPromises)[K];
}

export type { FileHandle } from 'node:fs/promises';
export const access = deferred('access');
export const chmod = deferred('chmod');
export const lchown = deferred('lchown');
export const lstat = deferred('lstat');
export const lutimes = deferred('lutimes');
export const mkdir = deferred('mkdir');
export const open = deferred('open');
export const readdir = deferred('readdir');
export const readFile = deferred('readFile');
export const readlink = deferred('readlink');
export const rename = deferred('rename');
export const rm = deferred('rm');
export const stat = deferred('stat');
export const statfs = deferred('statfs');
export const symlink = deferred('symlink');
export const unlink = deferred('unlink');
export const utimes = deferred('utimes');
