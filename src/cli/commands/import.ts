import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { formatBytes } from '../../bundle/size.js';
import { formatPlatform, parsePlatformList } from '../../oci/platform.js';
import { familiarReference, parseReference } from '../../oci/reference.js';
import { importImages } from '../../verbs/import.js';
import { ProgressView } from '../progress.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface ImportFlags {
  platform?: string;
  key?: string;
  keepBlobs?: boolean;
  json?: boolean;
  quiet?: boolean;
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
      const keepBlobs = flags.keepBlobs !== false;
      const quiet = flags.quiet === true || flags.json === true;
      const view = new ProgressView(process.stderr, quiet);
      // Warnings always reach stderr; with -q/--json there is no progress block to print above.
      const warn = (m: string): void => (quiet ? void process.stderr.write(`warning: ${m}\n`) : view.handle({ kind: 'note', message: `warning: ${m}` }));
      const publicKey = flags.key === undefined ? undefined : await readFile(flags.key, 'utf8');
      // A bundle takes every platform unless told; an archive this host's (parsePlatformList's default).
      const platforms = flags.platform === undefined ? undefined : platformList;
      const imported = await importImages(store, source, {
        keepBlobs,
        onWarning: warn,
        onProgress: view.listener,
        ...(platforms === undefined ? {} : { platforms }),
        ...(publicKey === undefined ? {} : { publicKey }),
      });
      const rows: Array<{ ref: string; platform: string; manifestDigest: string; layersUnpacked: number; layersSkipped: number; bytesWritten: number; bytesPresent: number }> = [];
      if (imported.kind === 'bundle') {
        const s = imported.summary;
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
      }
      for (const r of imported.results) {
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
