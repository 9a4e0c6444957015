import type { Command } from 'commander';
import { nodeV8 } from '../../io/builtins.js';
import { nativeFs } from '../../io/native.js';

/** A command module adds its subcommand to the program. */
export type Register = (program: Command) => void;

interface CommandModule {
  /** The subcommands the module registers, in --help order. */
  names: string[];
  load: () => Promise<Register[]>;
  /** Moves bulk bytes through buffers (bundles, layers, blobs): runs with a bounded heap (boundHeap). */
  bulk?: true;
  /** Its JavaScript is bookkeeping around native work, kept for the whole source: runs lean (leanHeap). */
  lean?: true;
}

/**
 * Every command, in the order --help lists them. Modules load lazily: `ferry run` should not pay
 * for the registry client, the bundle writer and zstd before it starts a container.
 */
const MODULES: CommandModule[] = [
  { names: ['export'], load: async () => [(await import('./export.js')).registerExport], bulk: true },
  { names: ['inspect'], load: async () => [(await import('./inspect.js')).registerInspect] },
  { names: ['login', 'logout'], load: async () => { const m = await import('./login.js'); return [m.registerLogin, m.registerLogout]; } },
  { names: ['ls'], load: async () => [(await import('./ls.js')).registerLs], bulk: true },
  { names: ['verify'], load: async () => [(await import('./verify.js')).registerVerify], bulk: true },
  { names: ['keygen'], load: async () => [(await import('./keygen.js')).registerKeygen] },
  { names: ['import'], load: async () => [(await import('./import.js')).registerImport], bulk: true, lean: true },
  { names: ['images'], load: async () => [(await import('./images.js')).registerImages] },
  { names: ['tag'], load: async () => [(await import('./tag.js')).registerTag] },
  { names: ['rmi'], load: async () => [(await import('./rmi.js')).registerRmi] },
  { names: ['prune'], load: async () => [(await import('./prune.js')).registerPrune] },
  { names: ['fsck'], load: async () => [(await import('./fsck.js')).registerFsck], bulk: true },
  { names: ['inventory'], load: async () => [(await import('./inventory.js')).registerInventory] },
  { names: ['run'], load: async () => [(await import('./run.js')).registerRun] },
  { names: ['ps'], load: async () => [(await import('./ps.js')).registerPs] },
  { names: ['stats'], load: async () => [(await import('./stats.js')).registerStats] },
  { names: ['port'], load: async () => [(await import('./port.js')).registerPort] },
  { names: ['start', 'restart'], load: async () => { const m = await import('./start.js'); return [m.registerStart, m.registerRestart]; } },
  { names: ['stop', 'kill'], load: async () => { const m = await import('./stop.js'); return [m.registerStop, m.registerKill]; } },
  { names: ['volume'], load: async () => [(await import('./volume.js')).registerVolume] },
  { names: ['container'], load: async () => [(await import('./container.js')).registerContainer] },
  { names: ['rm'], load: async () => [(await import('./rm.js')).registerRm] },
  { names: ['logs'], load: async () => [(await import('./logs.js')).registerLogs] },
  { names: ['exec'], load: async () => [(await import('./exec.js')).registerExec] },
  { names: ['diff'], load: async () => [(await import('./diff.js')).registerDiff], bulk: true },
  { names: ['build'], load: async () => [(await import('./build.js')).registerBuild], bulk: true },
  { names: ['commit'], load: async () => [(await import('./commit.js')).registerCommit], bulk: true },
  { names: ['pull'], load: async () => [(await import('./pull.js')).registerPull], bulk: true },
  { names: ['push'], load: async () => [(await import('./push.js')).registerPush], bulk: true },
  { names: ['save'], load: async () => [(await import('./save.js')).registerSave], bulk: true },
  { names: ['serve'], load: async () => [(await import('./serve.js')).registerServe], bulk: true },
  { names: ['generate'], load: async () => [(await import('./generate.js')).registerGenerate] },
  { names: ['supervise'], load: async () => [(await import('./supervise.js')).registerSupervise], bulk: true },
  { names: ['doctor'], load: async () => [(await import('./doctor.js')).registerDoctor] },
];

/** The commands to register: only the named one's module when it is known, else all (help, typos). */
export async function loadCommands(name: string | undefined): Promise<Register[]> {
  const only = name === undefined ? undefined : MODULES.find((m) => m.names.includes(name));
  const chosen = only ? [only] : MODULES;
  if (only?.bulk === true) boundHeap();
  if (only?.lean === true) leanHeap();
  return (await Promise.all(chosen.map((m) => m.load()))).flat();
}

/**
 * glibc's mmap threshold in bulk commands (boundHeap): buffers from 256 KiB up are mapped on their
 * own. The streams' own chunks (the decoder's 128 KiB outputs, 128 KiB reads) stay in the heap,
 * where freed ones are used again; what is larger (a bundle's header, 2.5 KB per image and read
 * whole) goes back to the system when freed, instead of leaving its size in the heap for good.
 */
const BULK_MMAP_THRESHOLD = 256 * 1024;

/**
 * Bound the heaps (V8's and the C library's) in the commands that move bulk bytes.
 * - The young generation stays at the size it starts with (1 MiB semi-spaces; 2 in the packed
 *   executable). By default V8 doubles it each time enough objects survived its collections, up
 *   to 16 MiB semi-spaces on Node 20 and 32 MiB on Node 24; a long export or import gets there
 *   and keeps it.
 * - The old generation is collected once it has grown by half since the last collection. V8's
 *   own factor, up to 4x for a heap this small, let the garbage of thousands of images (and the
 *   buffers it holds) pile up: a 1600-image import peaked at 119 MB instead of 104, an export at
 *   160-194 MB instead of 160. The cost shows only where the heap grows with the images: the
 *   1600-image export makes 19 full collections instead of 3 (~0.4 s of 7 s); the seven-image
 *   export and import make as many as before.
 * - glibc's mmap threshold is fixed (native fixMmapThreshold). Left to itself, glibc raises it to
 *   the size of each large buffer freed (zstd's, the decoder's, up to 32 MiB) and its trim
 *   threshold to twice that, and then every arena of the process (libuv's threads, V8's, the zstd
 *   thread) keeps that much freed memory. A 1600-image import peaked at 101-104 MB instead of
 *   90-95, the 25-image one at 66 either way; the seven-image import took as long. Fixed at
 *   4 MiB, the 1600-image import (its header 4 MB, read in 128 KiB pieces) peaked at 90-93 MB;
 *   at 256 KiB 87-88. The 25-image import (68-69 MB), the exports and the seven-image import
 *   (~220 MB) peak as before.
 * V8 reads both flags whenever it sizes a space, so setting them while the process runs takes
 * effect; mallopt changes glibc's parameters for every arena at once. Process-wide settings, so
 * the CLI's choice per command: a program that uses ferry as a library keeps its own. Node sets
 * V8's flags again from its command line when a worker thread starts: ferry starts none (zstd
 * decodes on a thread of its addon).
 */
function boundHeap(): void {
  nodeV8().setFlagsFromString('--semi-space-growth-factor=1 --heap-growing-percent=50');
  nativeFs().fixMmapThreshold(BULK_MMAP_THRESHOLD);
}

/**
 * `ferry import` runs without V8's optimizing compilers and grows its old generation in small
 * steps. Its bytes are moved by native code (the zstd thread, OpenSSL's hashes, the kernel); its
 * JavaScript is per-entry and per-image bookkeeping, and it keeps every image's records until the
 * names are written last.
 * - TurboFan compiled that bookkeeping once it ran a few thousand times: its code and its
 *   compile-time memory (on V8's worker threads, whose heaps keep what they freed) came to 7-8 MB
 *   in a 1600-image import, 4 MB in a 25-image one. Without it, the 1600-image import took less
 *   CPU (5.3 s instead of 6.5). The seven-image import into a tmpfs store (medians of 6 alternated
 *   runs) took 3.02 s instead of 2.97 with 4% less CPU: its per-entry work is mostly syscalls.
 *   Delaying TurboFan instead (--interrupt-budget 10x V8's) peaked at 79 and 67.5 MB.
 * - V8 otherwise lets the old generation grow by 8 MB between collections: at 1600 images that
 *   is 8 MB of garbage on top of the records. 2 MB steps (--optimize-for-size) cost the import
 *   nothing measurable, an export of 1600 images 15-25% more CPU for no memory: export keeps the
 *   default.
 * Together: a 1600-image import (--window-log 20) peaks at 76-77 MB instead of 88, a 25-image one
 * at 64 instead of 68, the seven-image import at 215 instead of 221.
 * Set while the process runs, as boundHeap's: functions already optimized (Node's startup) stay so.
 */
function leanHeap(): void {
  nodeV8().setFlagsFromString('--no-turbofan --no-maglev --optimize-for-size');
}

