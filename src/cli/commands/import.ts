import type { Command } from 'commander';
import { open, readFile, stat } from 'node:fs/promises';
import { formatBytes } from '../../bundle/size.js';
import { FerryError, UsageError } from '../../errors.js';
import { indexTar } from '../../archive/index.js';
import { formatPlatform, parsePlatformList, type Platform } from '../../oci/platform.js';
import { familiarReference, parseReference } from '../../oci/reference.js';
import { ZSTD_MAGIC } from '../../io/zstd.js';
import { importBundle } from '../../verbs/import-bundle.js';
import { ProgressView } from '../progress.js';
import { importArchive } from '../../verbs/import-archive.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface ImportFlags {
  platform?: string;
  key?: string;
  keepBlobs?: boolean;
  json?: boolean;
  quiet?: boolean;
}

type Kind = 'bundle' | 'docker-archive' | 'oci-archive' | 'oci';

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );
}

/** What the user gave: a transport prefix decides; else a bundle (zstd, volumes, stdin) or a plain tar by its content. */
async function detect(source: string): Promise<{ kind: Kind; spec: string }> {
  const m = /^(docker-archive|oci-archive|oci):/.exec(source);
  if (m) return { kind: m[1] as Kind, spec: source };
  if (source === '-') return { kind: 'bundle', spec: source };
  if (!(await exists(source))) {
    if (await exists(`${source}.001`)) return { kind: 'bundle', spec: source };
    throw new UsageError(`import ${source}: no such file`, { hint: 'give a bundle (.tar.zst or its volumes), a docker-archive or OCI archive tar, or oci:DIR' });
  }
  const st = await stat(source);
  if (st.isDirectory()) return { kind: 'oci', spec: `oci:${source}` };
  const handle = await open(source, 'r');
  const head = Buffer.alloc(4);
  try {
    await handle.read(head, 0, 4, 0);
  } finally {
    await handle.close();
  }
  if (head.equals(ZSTD_MAGIC) || /\.\d{3}$/.test(source)) return { kind: 'bundle', spec: source };
  const index = await indexTar(source, `archive ${source}`);
  if (index.entries.has('oci-layout')) return { kind: 'oci-archive', spec: `oci-archive:${source}` };
  if (index.entries.has('manifest.json')) return { kind: 'docker-archive', spec: `docker-archive:${source}` };
  throw new FerryError('UNSUPPORTED', `import ${source}: neither a ferry bundle, a docker-archive nor an OCI archive`, {
    hint: 'name the format with a prefix: docker-archive:FILE, oci-archive:FILE, oci:DIR',
  });
}

interface Totals {
  images: number;
  bytesWritten: number;
  bytesPresent: number;
  layersUnpacked: number;
  layersSkipped: number;
  ms: number;
}

/** The last line of an import: what it added, what the store had already, how long it took. */
function summaryLine(t: Totals): string {
  const images = `${t.images} image${t.images === 1 ? '' : 's'}`;
  return `imported ${images} in ${(t.ms / 1000).toFixed(1)} s: ${formatBytes(t.bytesWritten)} written, ${formatBytes(t.bytesPresent)} already present; ${t.layersUnpacked} layers unpacked, ${t.layersSkipped} already present\n`;
}

/** `ferry import SOURCE`: load a bundle, docker-archive or OCI archive/layout into the store. */
export const registerImport: Register = (program) => {
  program
    .command('import')
    .description('load a bundle, docker-archive or OCI archive into the store')
    .argument('<source>', 'bundle (.tar.zst, its volumes, or - for stdin), docker-archive:FILE[:REF] (every image and tag without REF), oci-archive:FILE[:REF], oci:DIR[:REF]')
    .option('--platform <list>', 'platforms to import, e.g. linux/amd64,linux/arm64 (default: all in a bundle, this host for archives)')
    .option('--key <public.pem>', 'refuse a bundle that is not signed with this key')
    .option('--no-keep-blobs', 'do not keep compressed layer blobs (saves space; push/export from the store then needs them again)')
    .option('--json', 'print machine-readable JSON')
    .option('-q, --quiet', 'print only the imported manifest digests')
    .action(async (source: string, flags: ImportFlags, command: Command) => {
      const started = Date.now();
      // Options first: a usage error costs no disk work.
      const platformList = parsePlatformList(flags.platform);
      const store = await storeFromCommand(command);
      const { kind, spec } = await detect(source);
      const keepBlobs = flags.keepBlobs !== false;
      const quiet = flags.quiet === true || flags.json === true;
      const view = new ProgressView(process.stderr, quiet);
      // Warnings always reach stderr; with -q/--json there is no progress block to print above.
      const warn = (m: string): void => (quiet ? void process.stderr.write(`warning: ${m}\n`) : view.handle({ kind: 'note', message: `warning: ${m}` }));
      const onProgress = view.listener;
      const rows: Array<{ ref: string; platform: string; manifestDigest: string; layersUnpacked: number; layersSkipped: number; bytesWritten: number; bytesPresent: number }> = [];
      if (kind === 'bundle') {
        if (flags.platform === 'all') throw new UsageError('import: --platform all is the default for bundles; leave it out');
        const platforms: Platform[] | undefined = flags.platform === undefined || platformList === 'all' ? undefined : platformList;
        const publicKey = flags.key === undefined ? undefined : await readFile(flags.key, 'utf8');
        const s = await importBundle(store, spec, {
          keepBlobs,
          onWarning: warn,
          onProgress,
          ...(platforms ? { platforms } : {}),
          ...(publicKey ? { publicKey } : {}),
        });
        view.finish();
        const ms = Date.now() - started;
        if (flags.json === true) {
          process.stdout.write(`${JSON.stringify({ ...s, seconds: ms / 1000 }, null, 2)}\n`);
          return;
        }
        if (flags.quiet === true) {
          process.stdout.write(s.images.map((i) => `${i.manifestDigest}\n`).join(''));
          return;
        }
        for (const i of s.images) process.stdout.write(`imported ${familiarReference(parseReference(i.ref))} (${formatPlatform(i.platform)}) ${i.manifestDigest}\n`);
        process.stdout.write(summaryLine({ ...s, images: s.images.length, ms }));
        return;
      } else {
        if (flags.key !== undefined) throw new UsageError('import: --key applies to bundles only');
        const results = await importArchive(store, spec, { platforms: platformList, keepBlobs, onWarning: warn, onProgress });
        for (const r of results) {
          for (const image of r.images) {
            rows.push({
              ref: r.ref ?? image.digest,
              platform: formatPlatform(image.platform),
              manifestDigest: image.digest,
              layersUnpacked: r.layersWritten,
              layersSkipped: r.layersPresent,
              bytesWritten: r.bytesWritten,
              bytesPresent: r.bytesPresent,
            });
          }
        }
      }
      view.finish();
      if (flags.json === true) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      else if (flags.quiet === true) process.stdout.write(rows.map((r) => `${r.manifestDigest}\n`).join(''));
      else {
        for (const r of rows) process.stdout.write(`imported ${familiarReference(parseReference(r.ref))} (${r.platform}) ${r.manifestDigest}: ${r.layersUnpacked} layers unpacked, ${r.layersSkipped} present, ${formatBytes(r.bytesWritten)} written\n`);
        const sum = (k: 'bytesWritten' | 'bytesPresent' | 'layersUnpacked' | 'layersSkipped'): number => rows.reduce((n, r) => n + r[k], 0);
        process.stdout.write(
          summaryLine({ images: rows.length, bytesWritten: sum('bytesWritten'), bytesPresent: sum('bytesPresent'), layersUnpacked: sum('layersUnpacked'), layersSkipped: sum('layersSkipped'), ms: Date.now() - started }),
        );
      }
    });
};
