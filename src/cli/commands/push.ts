import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { UsageError } from '../../errors.js';
import { formatPlatform, parsePlatformList } from '../../oci/platform.js';
import { familiarReference, parseReference } from '../../oci/reference.js';
import { RegistryClient } from '../../registry/client.js';
import type { PushResult } from '../../verbs/push.js';
import { pushFrom, type PushSource } from '../../verbs/push-from.js';
import { parseCompression } from '../../transfer/push-target.js';
import { ProgressView } from '../progress.js';
import { jobsFlag, registryClientOptions } from '../registry-options.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

interface PushFlags {
  all?: boolean;
  bundle?: string;
  key?: string;
  compress?: string;
  platform?: string;
  jobs?: string;
  tmpDir?: string;
  quiet?: boolean;
  json?: boolean;
}

function report(results: PushResult[], flags: PushFlags, compression: string): void {
  if (flags.json === true) {
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    return;
  }
  for (const r of results) {
    if (flags.quiet === true) {
      process.stdout.write(`${r.digest}\n`);
      continue;
    }
    const name = familiarReference(parseReference(r.target));
    const blobs = `${r.uploaded} uploaded, ${r.present} present, ${r.mounted} mounted`;
    process.stdout.write(`pushed ${name} ${r.digest} (${blobs})\n`);
    for (const i of r.images) {
      if (i.rewritten) {
        process.stdout.write(`  ${formatPlatform(i.platform)}: ${i.sourceDigest} -> ${i.digest} (layers compressed with ${compression}: new manifest digest)\n`);
      } else if (r.images.length > 1) {
        process.stdout.write(`  ${formatPlatform(i.platform)}: ${i.digest}\n`);
      }
    }
    if (r.index !== undefined && r.index.rewritten) {
      process.stdout.write(`  index: ${r.index.sourceDigest === undefined ? `${r.index.digest} (made for these images)` : `${r.index.sourceDigest} -> ${r.index.digest}`}\n`);
    }
  }
}

/**
 * `ferry push IMAGE [DEST]`, `ferry push --all REGISTRY[/PREFIX]`, `ferry push --bundle B.tar.zst
 * REGISTRY[/PREFIX]`: store or bundle images into a registry.
 */
export const registerPush: Register = (program) => {
  program
    .command('push')
    .description('push store images (or a bundle, streaming, without a store) to a registry')
    .argument('[image]', 'store image (redis:7), or oci:DIR[:REF], docker-archive:FILE[:REF], oci-archive:FILE[:REF]; with --all/--bundle: REGISTRY[/PREFIX]')
    .argument('[dest]', 'destination reference (default: the image\'s own name)')
    .option('--all', 'push every store image, re-rooted under REGISTRY[/PREFIX] (docker.io/library/redis:7 -> REGISTRY/PREFIX/library/redis:7)')
    .option('--bundle <file>', 'push the images of a bundle straight to REGISTRY[/PREFIX], streaming, without importing')
    .option('--key <public.pem>', 'with --bundle: refuse a bundle not signed with this key')
    .option('--compress <gzip|zstd>', 'compression for layers held uncompressed (default gzip: every engine reads it)')
    .option('--platform <list>', 'platforms of IMAGE to push (default: every platform the store has)')
    .option('-j, --jobs <n>', 'blobs uploaded at once', '4')
    .option('--tmp-dir <dir>', 'where --bundle spools layers while they upload (default $TMPDIR)')
    .option('-q, --quiet', 'print only the pushed digests')
    .option('--json', 'print machine-readable JSON')
    .action(async (image: string | undefined, dest: string | undefined, flags: PushFlags, command: Command) => {
      const compression = parseCompression(flags.compress);
      const jobs = jobsFlag(flags.jobs);
      const platforms = flags.platform === undefined ? undefined : parsePlatformList(flags.platform);
      if (flags.all === true && flags.bundle !== undefined) throw new UsageError('push: --all and --bundle cannot be combined', { hint: '--bundle already pushes every image of the bundle' });
      if (flags.key !== undefined && flags.bundle === undefined) throw new UsageError('push: --key applies to --bundle only');
      const view = new ProgressView(process.stderr, flags.quiet === true || flags.json === true);
      const client = new RegistryClient(registryClientOptions(command, jobs));
      try {
        let source: PushSource;
        if (flags.bundle !== undefined || flags.all === true) {
          if (image === undefined || dest !== undefined) {
            throw new UsageError(`push ${flags.all === true ? '--all' : '--bundle'}: give exactly one REGISTRY[/PREFIX]`, { hint: 'e.g. ferry push --all registry.internal:5000/mirror' });
          }
          if (flags.bundle !== undefined) {
            const publicKey = flags.key === undefined ? undefined : await readFile(flags.key, 'utf8');
            source = {
              kind: 'bundle',
              bundle: flags.bundle,
              registry: image,
              ...(publicKey === undefined ? {} : { publicKey }),
              ...(flags.tmpDir !== undefined ? { spoolDir: flags.tmpDir } : {}),
            };
          } else source = { kind: 'all', registry: image };
        } else {
          if (image === undefined) throw new UsageError('push: name an image (or use --all / --bundle)', { hint: 'ferry push redis:7 registry.internal:5000/library/redis:7' });
          source = { kind: 'image', image, ...(dest === undefined ? {} : { dest }), ...(platforms === undefined ? {} : { platforms }) };
        }
        const results = await pushFrom(client, source, { store: () => storeFromCommand(command, { readOnly: true }), compression, jobs, onProgress: view.listener });
        view.finish();
        report(results, flags, compression);
      } finally {
        view.finish();
        client.close();
      }
    });
};
