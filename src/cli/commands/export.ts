import type { Command } from 'commander';
import { access } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { checkWriteOptions, loadExcludeSet, parseSize, type BundleOutput, type WriteBundleOptions } from '../../bundle/index.js';
import { loadPrivateKey } from '../../bundle/sign.js';
import { FerryError, UsageError } from '../../errors.js';
import { packageRoot, packedBuild } from '../../io/native-parts.js';
import { formatPlatform, parsePlatformList } from '../../oci/platform.js';
import { RegistryClient } from '../../registry/client.js';
import { defaultCacheDir } from '../../transfer/pull-cache.js';
import { loadBundleDefinition, type BundleDefinition } from '../bundle-file.js';
import { humanBytes, ProgressView } from '../progress.js';
import { registryClientOptions } from '../registry-options.js';
import { existingStore } from '../store-options.js';
import { exportImages, type CarriedFile, type ExportRequest } from '../../verbs/export.js';
import type { Register } from './index.js';

interface ExportFlags {
  output?: string;
  file?: string;
  platform?: string;
  jobs?: string;
  layers?: string;
  level?: string;
  windowLog?: string;
  workers?: string;
  split?: string;
  since?: string;
  sign?: string;
  cache: boolean;
  cacheDir?: string;
  quiet?: boolean;
  json?: boolean;
  pull?: boolean;
  withFerry?: boolean;
}

/**
 * The ferry executable to carry: the packed one copies itself; from a source checkout, the one
 * `npm run pack` made in pack/.
 */
async function ferryExecutable(): Promise<CarriedFile> {
  const packed = packedBuild();
  if (packed !== undefined) return { path: process.execPath, name: `ferry-${packed.platform}`, platform: packed.platform };
  const platform = `linux-${process.arch === 'arm64' ? 'arm64' : 'x64'}`;
  const path = join(packageRoot(), 'pack', `ferry-${platform}`);
  try {
    await access(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    throw new FerryError('NOT_FOUND', `--with-ferry: ${path} is missing: from a source checkout ferry carries the executable \`npm run pack\` made`, {
      hint: `run \`npm run pack\` in ${packageRoot()} first (after npm ci), then export again`,
    });
  }
  return { path, name: `ferry-${platform}`, platform };
}

/**
 * What the command line and its definition file ask for, platforms parsed (once per distinct list:
 * a definition of thousands of images gives most of them the same one, and a bad one must cost
 * neither a pull nor a store lock). Made here so that the definition itself is not held while the
 * export runs.
 */
async function exportRequests(file: string | undefined, images: readonly string[], platform: string | undefined): Promise<{ defaults: BundleDefinition['options']; requests: ExportRequest[] }> {
  const definition = file === undefined ? undefined : await loadBundleDefinition(file);
  const texts: Array<{ text: string; platforms: string | undefined }> = [];
  const globalPlatforms = platform ?? definition?.platforms?.join(',');
  for (const item of definition?.images ?? []) texts.push({ text: item.ref, platforms: item.platforms?.join(',') ?? globalPlatforms });
  for (const text of images) texts.push({ text, platforms: globalPlatforms });
  if (texts.length === 0) throw new UsageError('export: no images given', { hint: 'name images (ferry export redis:7 mysql:8) or a definition file (-f bundles/databases.yaml)' });
  const platformLists = new Map<string | undefined, ExportRequest['platforms']>();
  for (const r of texts) if (!platformLists.has(r.platforms)) platformLists.set(r.platforms, parsePlatformList(r.platforms));
  return { defaults: definition?.options ?? {}, requests: texts.map((r) => ({ text: r.text, platforms: platformLists.get(r.platforms)! })) };
}

function intFlag(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new UsageError(`--${name} "${value}": expected a whole number`);
  return n;
}

/** `ferry export [options] IMAGE...`: pull images and write one deduplicated, compressed bundle. */
export const registerExport: Register = (program) => {
  program
    .command('export')
    .description('pull images and write one deduplicated, zstd-compressed bundle')
    .argument('[images...]', 'registry references (redis:7), docker-archive:FILE[:REF], oci:DIR[:REF], oci-archive:FILE[:REF]')
    .option('-o, --output <file>', 'bundle file, or - for stdout (default bundle.tar.zst)')
    .option('-f, --file <bundle.yaml>', 'a bundle definition listing images, platforms and options (see bundles/databases.yaml)')
    .option('--platform <list>', 'comma-separated os/arch[/variant] list, or all (default: this host)')
    .option('-j, --jobs <n>', 'blobs pulled at once', '4')
    .option('--layers <encoding>', 'raw (uncompressed in the zstd stream: smallest) or as-pulled (registry blobs byte for byte)')
    .option('--level <n>', 'zstd level 1..22, or max (default 9)')
    .option('--window-log <n>', "zstd window log (default 27; above 27 plain tar --zstd cannot open the bundle; below 22 the compressor's jobs shrink with it, bounding export memory)")
    .option('--workers <n>', 'zstd worker threads (default 2)')
    .option('--split <size>', 'write volumes of at most SIZE (700M, 4G, fat32) plus a .sha256 file')
    .option('--since <bundle|inventory.json>', 'delta: leave out blobs the old bundle or target inventory has')
    .option('--sign <key.pem>', 'sign ferry-bundle.json with this ed25519 private key')
    .option('--with-ferry', 'also write the ferry executable (ferry-linux-x64) beside the bundle, listed in its .sha256 and signature')
    .option('--pull', 'always pull from the registry, even when the local store has the image')
    .option('--no-cache', 'do not keep pulled blobs in the local pull cache')
    .option('--cache-dir <dir>', 'pull cache directory (default $FERRY_CACHE_DIR, /var/cache/ferry as root, else ~/.cache/ferry)')
    .option('-q, --quiet', 'no progress output')
    .option('--json', 'print the summary as JSON')
    .action(async (images: string[], flags: ExportFlags, command: Command) => {
      const { defaults, requests } = await exportRequests(flags.file, images, flags.platform);

      const outputPath = flags.output ?? defaults.output ?? 'bundle.tar.zst';
      const splitText = flags.split ?? defaults.split;
      if (splitText !== undefined && outputPath === '-') throw new UsageError('--split cannot be used with -o - (stdout)');
      if (flags.withFerry === true && outputPath === '-') throw new UsageError('--with-ferry cannot be used with -o - (stdout)', { hint: 'write the bundle to a file; the executable goes beside it' });
      const options: Omit<WriteBundleOptions, 'jobs' | 'onProgress' | 'tools'> = {};
      const layers = flags.layers ?? defaults.layers;
      if (layers !== undefined) {
        if (layers !== 'raw' && layers !== 'as-pulled') throw new UsageError(`--layers "${layers}": use raw or as-pulled`);
        options.layers = layers;
      }
      const level = flags.level ?? (defaults.level === undefined ? undefined : String(defaults.level));
      if (level !== undefined) options.level = level === 'max' ? 'max' : (intFlag(level, 'level') ?? 9);
      const windowLog = intFlag(flags.windowLog, 'window-log') ?? defaults.windowLog;
      if (windowLog !== undefined) options.windowLog = windowLog;
      const workers = intFlag(flags.workers, 'workers');
      if (workers !== undefined) options.workers = workers;
      const jobs = intFlag(flags.jobs, 'jobs') ?? 4;
      if (jobs < 1) throw new UsageError(`--jobs "${String(flags.jobs)}": expected at least 1`);
      const output: BundleOutput = outputPath === '-' ? process.stdout : splitText === undefined ? outputPath : { path: outputPath, split: parseSize(splitText) };
      checkWriteOptions(options, output);
      if (flags.since !== undefined) options.exclude = await loadExcludeSet(flags.since);
      if (flags.sign !== undefined) options.signKey = await loadPrivateKey(flags.sign);
      const carried = flags.withFerry === true ? await ferryExecutable() : undefined;
      const quiet = flags.quiet === true;
      const view = new ProgressView(process.stderr, quiet);

      let client: RegistryClient | undefined;
      // The local store answers bare references first (images imported or committed here), unless --pull.
      const store = flags.pull === true ? undefined : await existingStore(command);
      try {
        const summary = await exportImages(
          requests,
          output,
          {
            ...options,
            jobs,
            client: () => (client ??= new RegistryClient(registryClientOptions(command))),
            ...(store === undefined ? {} : { store }),
            ...(flags.cache ? { cacheDir: flags.cacheDir ?? defaultCacheDir() } : {}),
            ...(carried === undefined ? {} : { carry: [carried] }),
            onProgress: view.listener,
          },
        );
        view.finish();
        const header = summary.header;
        const result = {
          bundle: outputPath,
          files: summary.files,
          images: header.images.map((i) => ({ ref: i.ref, platform: formatPlatform(i.platform), digest: i.manifestDigest })),
          blobs: header.blobs.length,
          requires: header.requires.length,
          uncompressedBytes: summary.tarBytes,
          bytes: summary.bytes,
          signed: summary.signed,
          ...(header.tools === undefined ? {} : { carried: header.tools.map((t) => join(dirname(outputPath), t.file)) }),
        };
        if (flags.json === true) {
          process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        } else if (!quiet && outputPath !== '-') {
          for (const i of header.images) process.stderr.write(`  ${i.ref} ${formatPlatform(i.platform)} ${i.manifestDigest}\n`);
          const where = summary.files.length > 1 ? `${summary.files.length} files (${summary.files.join(', ')})` : outputPath;
          process.stderr.write(
            `wrote ${where}: ${header.images.length} images, ${header.blobs.length} unique blobs, ` +
              `${humanBytes(summary.tarBytes)} -> ${humanBytes(summary.bytes)}` +
              `${header.requires.length > 0 ? `, delta requiring ${header.requires.length} blobs on the target` : ''}` +
              `${summary.signed ? ', signed' : ''}` +
              `${header.tools === undefined ? '' : `; ${header.tools.map((t) => join(dirname(outputPath), t.file)).join(', ')} beside it`}\n`,
          );
        }
      } finally {
        view.finish();
        client?.close();
      }
    });
};
