import { describeBundle, type BundleDescription } from '../../bundle/describe.js';
import { readBundleHeader } from '../../bundle/read-bundle.js';
import { formatBytes, formatMemory } from '../../bundle/size.js';
import { shortDigest } from '../../oci/digest.js';
import type { Register } from './index.js';

interface LsFlags {
  json?: boolean;
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd());
}

/** The human form of `ferry ls`. */
export function formatDescription(d: BundleDescription): string {
  const lines: string[] = [];
  const where = d.source === 'volumes' ? count(d.volumes.length, 'volume') : d.source === 'file' ? 'one file' : 'read from stdin';
  lines.push(`${d.bundle}: ferry bundle v${d.formatVersion} (ferry ${d.ferryVersion}), created ${d.created}, layers ${d.layers}, ${d.signed ? 'signed' : 'unsigned'}, ${where}`);
  lines.push('');
  lines.push(
    ...table([
      ['IMAGE', 'PLATFORM', 'MANIFEST', 'LAYERS', 'SIZE'],
      ...d.images.map((i) => [i.ref, i.platform, `sha256:${shortDigest(i.manifestDigest)}`, String(i.layers), formatBytes(i.size)]),
    ]),
  );
  if (d.sharedLayers.length > 0) {
    lines.push('', 'shared layers (stored once):');
    for (const s of d.sharedLayers) lines.push(`  sha256:${shortDigest(s.blob)}  ${formatBytes(s.size)}  used by ${count(s.images.length, 'image')}: ${s.images.join(', ')}`);
  }
  const t = d.totals;
  lines.push(
    '',
    `total: ${count(t.images, 'image')}, ${count(t.blobs, 'blob')}, ${formatBytes(t.uncompressedBytes)} uncompressed, ${t.compressedBytes === undefined ? '' : `${formatBytes(t.compressedBytes)} compressed `}(${formatBytes(t.pulledBytes)} as pulled from a registry)`,
  );
  if (d.requires.length > 0) {
    lines.push(`delta: requires ${count(d.requires.length, 'layer')} (${formatBytes(d.requiredBytes)}) already on the target:`);
    for (const r of d.requires) lines.push(`  ${r.digest}  (diffId ${r.diffId})`);
  }
  const w = d.window;
  lines.push(
    `decompression: zstd level ${w.level}, window 2^${w.windowLog}, needs ${formatMemory(w.decodeMemory)} of memory; ` +
      (w.plainZstd ? 'plain `tar --zstd -xf` can open it' : `plain tools need \`zstd -d --long=${w.windowLog}\` (tar --zstd refuses it)`),
  );
  return `${lines.join('\n')}\n`;
}

/** `ferry ls [--json] BUNDLE`: what a bundle holds, reading only its start. */
export const registerLs: Register = (program) => {
  program
    .command('ls')
    .description('list what a bundle holds, reading only its start')
    .argument('<bundle>', 'bundle file, base name of its volumes, its first volume (b.tar.zst.001), or - for stdin')
    .option('--json', 'print machine-readable JSON')
    .action(async (bundle: string, flags: LsFlags) => {
      const description = describeBundle(await readBundleHeader(bundle));
      process.stdout.write(flags.json === true ? `${JSON.stringify(description, null, 2)}\n` : formatDescription(description));
    });
};
