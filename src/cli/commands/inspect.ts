import type { Command } from 'commander';
import { FerryError, isFerryError } from '../../errors.js';
import type { IndexInfo } from '../../oci/image.js';
import { parseManifest } from '../../oci/manifest.js';
import { formatPlatform, parsePlatform, type Platform } from '../../oci/platform.js';
import { formatReference, parseReference } from '../../oci/reference.js';
import { resolveRemote } from '../../registry/remote-image.js';
import { findStoreImage, matchStoreImages, openStoreImageByDigest, type Store, type StoreMatch } from '../../store/index.js';
import { imageJson } from '../image-json.js';
import { withRegistryClient } from '../registry-options.js';
import { existingStore } from '../store-options.js';
import { findContainer, type ContainerInfo } from '../../runtime/state.js';
import { printContainerInspect } from './container.js';
import type { Register } from './index.js';

interface InspectFlags {
  platform?: string;
  raw?: boolean;
  remote?: boolean;
}

/** Only ever local: a full digest or `sha256:` prefix is an image ID, never a registry name. */
const ID_ONLY_RE = /^(?:sha256:[0-9a-f]{1,64}|[0-9a-f]{64})$/;

function platformsOfIndex(index: IndexInfo): string[] | undefined {
  const parsed = parseManifest(index.raw, index.mediaType, `index ${index.digest}`);
  if (parsed.kind !== 'index') return undefined;
  return parsed.manifest.manifests.flatMap((d) => (d.platform === undefined || d.platform.os === 'unknown' ? [] : [formatPlatform(d.platform)]));
}

/** The store image as inspect prints it: the same JSON a registry image gives. */
async function inspectStored(store: Store, text: string, match: StoreMatch, platform: Platform | undefined, raw: boolean): Promise<void> {
  const entry = await findStoreImage(store, text, platform);
  // The index stands for the image when the user named it (by name or its digest) and picked no
  // platform; its platforms are listed either way, as for a registry image.
  let index: IndexInfo | undefined;
  if ((match.by === 'name' || match.by === 'index') && entry.indexDigest !== undefined && (await store.blobs.has(entry.indexDigest))) {
    const bytes = await store.blobs.read(entry.indexDigest);
    const parsed = parseManifest(bytes, undefined, `index ${entry.indexDigest}`);
    if (parsed.kind === 'index') index = { digest: entry.indexDigest, mediaType: parsed.mediaType, raw: bytes };
  }
  const image = await openStoreImageByDigest(store, entry.manifestDigest, parseReference(entry.name));
  const shown = platform === undefined ? index : undefined;
  if (raw) {
    process.stdout.write(shown?.raw ?? image.rawManifest);
    return;
  }
  // A name the store holds for several platforms without their index lists them too.
  const held = [...new Set(match.entries.filter((e) => e.name === entry.name).map((e) => formatPlatform(e.platform)))].sort();
  const platforms = index !== undefined ? platformsOfIndex(index) : held.length > 1 ? held : undefined;
  const json = imageJson(image, { name: entry.name, ...(shown !== undefined ? { index: shown } : {}), ...(platforms !== undefined ? { platforms } : {}) });
  process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
}

async function inspectRemote(command: Command, text: string, platform: Platform | undefined, raw: boolean): Promise<void> {
  const ref = parseReference(text);
  await withRegistryClient(command, async (client) => {
    if (raw && platform === undefined) {
      const served = await client.getManifest(ref);
      process.stdout.write(served.raw);
      return;
    }
    const resolved = await resolveRemote(client, ref, platform === undefined ? undefined : [platform]);
    const chosen = resolved.images[0]!;
    if (raw) {
      process.stdout.write(chosen.rawManifest);
      return;
    }
    const platforms = resolved.index === undefined ? undefined : platformsOfIndex(resolved.index);
    const json = imageJson(chosen, {
      name: formatReference(ref),
      ...(resolved.index !== undefined && platform === undefined ? { index: resolved.index } : {}),
      ...(platforms !== undefined ? { platforms } : {}),
    });
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  });
}

async function findContainerOrUndefined(store: Store, text: string): Promise<ContainerInfo | undefined> {
  try {
    return await findContainer(store.root, text);
  } catch (err) {
    // Not a container (or an ambiguous ID prefix): it may still name an image.
    if (isFerryError(err, 'NOT_FOUND') || isFerryError(err, 'USAGE')) return undefined;
    throw err;
  }
}

/** `ferry inspect IMAGE [--platform os/arch] [--raw] [--remote]`: an image's manifest and config as JSON. */
export const registerInspect: Register = (program) => {
  program
    .command('inspect')
    .description("show a container (docker's inspect JSON), or an image's digest, platform, layers and config as JSON: from the store, else from its registry")
    .argument('<image>', 'a container (name or ID), a store image (name or image ID) or a registry reference, e.g. redis:7 or registry.example:5000/team/app:1.2')
    .option('--platform <os/arch[/variant]>', 'for a multi-platform image, the platform to show (default: the whole index with --raw, else this host)')
    .option('--raw', 'print the manifest exactly as stored or served')
    .option('--remote', 'ask the registry even when the store holds the image')
    .addHelpText(
      'after',
      `
Where it looks: the store first, as docker image inspect does. A name is normalised as docker does
(redis = docker.io/library/redis:latest); an image ID is a prefix of the manifest digest (as ferry
images shows) or of the config digest (docker's and podman's image ID), with or without sha256:.
A name the store does not hold is looked up in its registry (with ferry login's credentials); an
image ID is only ever looked up in the store. --remote skips the store. The JSON is the same
either way; for a store image imported without its index, "platforms" lists what the store holds.`,
    )
    .action(async (image: string, flags: InspectFlags, command: Command) => {
      const platform = flags.platform === undefined ? undefined : parsePlatform(flags.platform);
      const raw = flags.raw === true;
      if (flags.remote === true) return inspectRemote(command, image, platform, raw);
      const store = await existingStore(command);
      // A container's name or ID first, as docker inspect does (a sha256: text is only ever an image).
      if (store !== undefined && platform === undefined && !raw && !image.startsWith('sha256:')) {
        const container = await findContainerOrUndefined(store, image);
        if (container !== undefined) return printContainerInspect(store, [image]);
      }
      let match: StoreMatch | undefined;
      if (store !== undefined) {
        try {
          match = await matchStoreImages(store, image);
        } catch (err) {
          if (!isFerryError(err, 'NOT_FOUND')) throw err;
        }
      }
      if (store !== undefined && match !== undefined) return inspectStored(store, image, match, platform, raw);
      if (ID_ONLY_RE.test(image)) {
        throw new FerryError('NOT_FOUND', `inspect ${image}: no image with this ID in the store`, { hint: 'ferry images lists the store; give a name to ask a registry' });
      }
      try {
        await inspectRemote(command, image, platform, raw);
      } catch (err) {
        if (!(err instanceof FerryError) || err.code === 'USAGE' || err.code === 'INVALID_REFERENCE') throw err;
        // The registry's own words stay the message; the hint says the store was asked first.
        const local = `the store${store === undefined ? ' (none yet)' : ''} has no image ${image} either (ferry images lists what it holds)`;
        throw new FerryError(err.code, err.message, { cause: err.cause, hint: err.hint === undefined ? local : `${err.hint}; ${local}` });
      }
    });
};
