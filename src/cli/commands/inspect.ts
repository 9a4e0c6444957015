import type { Command } from 'commander';
import { parseManifest } from '../../oci/manifest.js';
import { formatPlatform, parsePlatform } from '../../oci/platform.js';
import { formatReference, parseReference } from '../../oci/reference.js';
import { resolveRemote } from '../../registry/remote-image.js';
import { imageJson } from '../image-json.js';
import { withRegistryClient } from '../registry-options.js';
import type { Register } from './index.js';

interface InspectFlags {
  platform?: string;
  raw?: boolean;
}

/** `ferry inspect IMAGE [--platform os/arch] [--raw]`: an image's manifest and config as JSON. */
export const registerInspect: Register = (program) => {
  program
    .command('inspect')
    .description("show a registry image's digest, platform, layers and config as JSON")
    .argument('<image>', 'image reference, e.g. redis:7 or registry.example:5000/team/app:1.2')
    .option('--platform <os/arch[/variant]>', 'for a multi-platform image, the platform to show (default: the whole index with --raw, else this host)')
    .option('--raw', 'print the manifest exactly as the registry serves it')
    .action(async (image: string, flags: InspectFlags, command: Command) => {
      const ref = parseReference(image);
      const platform = flags.platform === undefined ? undefined : parsePlatform(flags.platform);
      await withRegistryClient(command, async (client) => {
        if (flags.raw === true && platform === undefined) {
          const served = await client.getManifest(ref);
          process.stdout.write(served.raw);
          return;
        }
        const resolved = await resolveRemote(client, ref, platform === undefined ? undefined : [platform]);
        const chosen = resolved.images[0]!;
        if (flags.raw === true) {
          process.stdout.write(chosen.rawManifest);
          return;
        }
        let platforms: string[] | undefined;
        if (resolved.index !== undefined) {
          const parsed = parseManifest(resolved.index.raw, resolved.index.mediaType, `index ${resolved.index.digest}`);
          if (parsed.kind === 'index') {
            platforms = parsed.manifest.manifests.flatMap((d) => (d.platform === undefined || d.platform.os === 'unknown' ? [] : [formatPlatform(d.platform)]));
          }
        }
        const json = imageJson(chosen, {
          name: formatReference(ref),
          ...(resolved.index !== undefined && platform === undefined ? { index: resolved.index } : {}),
          ...(platforms !== undefined ? { platforms } : {}),
        });
        process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
      });
    });
};
