import type { Command } from 'commander';
import { formatBytes } from '../../bundle/size.js';
import { shortDigest } from '../../oci/digest.js';
import { formatPlatform } from '../../oci/platform.js';
import { familiarReference, parseReference } from '../../oci/reference.js';
import { imageSize, type Store } from '../../store/index.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface ImagesFlags {
  json?: boolean;
  quiet?: boolean;
}

export interface ImageRow {
  name: string;
  platform: string;
  manifestDigest: string;
  /** Bytes of the image's unpacked layer tars. */
  size: number;
  updated: string;
}

export async function listImages(store: Store): Promise<ImageRow[]> {
  const rows: ImageRow[] = [];
  for (const ref of await store.refs.list()) {
    rows.push({ name: ref.name, platform: formatPlatform(ref.platform), manifestDigest: ref.manifestDigest, size: await imageSize(store, ref.manifestDigest), updated: ref.updated });
  }
  return rows;
}

/** `ferry images [--json] [-q]`: the images in the store. */
export const registerImages: Register = (program) => {
  program
    .command('images')
    .description('list images in the store')
    .option('--json', 'print machine-readable JSON')
    .option('-q, --quiet', 'print only manifest digests')
    .action(async (flags: ImagesFlags, command: Command) => {
      const rows = await listImages(await storeFromCommand(command, { readOnly: true }));
      if (flags.json === true) {
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      if (flags.quiet === true) {
        process.stdout.write([...new Set(rows.map((r) => r.manifestDigest))].map((d) => `${d}\n`).join(''));
        return;
      }
      const table = [['IMAGE', 'PLATFORM', 'DIGEST', 'SIZE'], ...rows.map((r) => [familiarReference(parseReference(r.name)), r.platform, `sha256:${shortDigest(r.manifestDigest as never)}`, formatBytes(r.size)])];
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      process.stdout.write(table.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n');
    });
};
