import type { Command } from 'commander';
import { formatPlatform, parsePlatformList } from '../../oci/platform.js';
import { familiarReference, parseReference } from '../../oci/reference.js';
import { RegistryClient } from '../../registry/client.js';
import { defaultCacheDir } from '../../transfer/pull-cache.js';
import { pullImages } from '../../verbs/pull.js';
import { humanBytes, ProgressView } from '../progress.js';
import { jobsFlag, registryClientOptions } from '../registry-options.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface PullFlags {
  platform?: string;
  jobs?: string;
  cache: boolean;
  cacheDir?: string;
  keepBlobs?: boolean;
  quiet?: boolean;
  json?: boolean;
}

/** `ferry pull [--platform P] IMAGE...`: registry straight into the store (the hosts of an isolated network, from the registry push fed). */
export const registerPull: Register = (program) => {
  program
    .command('pull')
    .description('pull images from a registry straight into the store')
    .argument('<images...>', 'registry references (registry.internal:5000/library/redis:7)')
    .option('--platform <list>', 'comma-separated os/arch[/variant] list, or all (default: this host)')
    .option('-j, --jobs <n>', 'blobs pulled at once', '4')
    .option('--no-cache', 'do not keep pulled blobs in the pull cache (a rerun then fetches everything again)')
    .option('--cache-dir <dir>', 'pull cache directory (default $FERRY_CACHE_DIR, /var/cache/ferry as root, else ~/.cache/ferry)')
    .option('--no-keep-blobs', 'do not keep compressed layer blobs in the store (push/serve then compress again)')
    .option('-q, --quiet', 'print only the pulled manifest digests')
    .option('--json', 'print machine-readable JSON')
    .action(async (images: string[], flags: PullFlags, command: Command) => {
      // Every option and name is checked before the store or the network is touched.
      const platforms = parsePlatformList(flags.platform);
      const jobs = jobsFlag(flags.jobs);
      for (const text of images) parseReference(text);
      const started = Date.now();
      const quiet = flags.quiet === true || flags.json === true;
      const view = new ProgressView(process.stderr, quiet);
      const store = await storeFromCommand(command);
      const client = new RegistryClient(registryClientOptions(command, jobs));
      try {
        const { results, cache } = await pullImages(store, images, {
          client,
          platforms,
          jobs,
          keepBlobs: flags.keepBlobs !== false,
          ...(flags.cache ? { cacheDir: flags.cacheDir ?? defaultCacheDir() } : {}),
          onProgress: view.listener,
          onWarning: (m) => (quiet ? void process.stderr.write(`warning: ${m}\n`) : view.handle({ kind: 'note', message: `warning: ${m}` })),
        });
        view.finish();
        if (flags.json === true) {
          const rows = results.map((r) => ({ ...r, images: r.images.map((i) => ({ ...i, platform: formatPlatform(i.platform) })) }));
          process.stdout.write(`${JSON.stringify({ images: rows, cache: cache ?? null, seconds: (Date.now() - started) / 1000 }, null, 2)}\n`);
          return;
        }
        if (flags.quiet === true) {
          process.stdout.write(results.flatMap((r) => r.images.map((i) => `${i.digest}\n`)).join(''));
          return;
        }
        for (const r of results) {
          for (const i of r.images) process.stdout.write(`pulled ${familiarReference(parseReference(r.ref ?? i.digest))} (${formatPlatform(i.platform)}) ${i.digest}\n`);
        }
        const sum = (k: 'bytesWritten' | 'bytesPresent' | 'layersWritten' | 'layersPresent'): number => results.reduce((n, r) => n + r[k], 0);
        const fetched = cache === undefined ? '' : `; fetched ${cache.fetched} blobs (${humanBytes(cache.fetchedBytes)}), ${cache.reused} from the pull cache`;
        process.stdout.write(
          `pulled ${results.length} name${results.length === 1 ? '' : 's'} in ${((Date.now() - started) / 1000).toFixed(1)} s: ${humanBytes(sum('bytesWritten'))} written, ` +
            `${humanBytes(sum('bytesPresent'))} already present; ${sum('layersWritten')} layers unpacked, ${sum('layersPresent')} already present${fetched}\n`,
        );
      } finally {
        view.finish();
        client.close();
      }
    });
};
