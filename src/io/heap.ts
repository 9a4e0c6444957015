import { nodeV8 } from './builtins.js';

/**
 * Keep V8's young generation at the size it starts with (1 MiB semi-spaces) in the commands that
 * move bulk bytes. By default V8 doubles it each time enough objects survived its collections, up
 * to 16 MiB semi-spaces on Node 20 and 32 MiB on Node 24; a long export or import gets there and
 * keeps it. The flag is read whenever V8 would grow the space, so setting it while the process
 * runs takes effect (the young generation's limit, the flag a command line would use, is fixed
 * when V8 makes the heap).
 */
export function boundYoungGeneration(): void {
  // Node sets V8's flags again from its command line when a worker thread starts: ferry starts
  // none (zstd decodes on a thread of its addon), else this would be lost then.
  nodeV8().setFlagsFromString('--semi-space-growth-factor=1');
}
