import type { KeyObject } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openBundleSource, type BundleInput, type BundleTarget, type OpenedBundle } from '../bundle/index.js';
import type { Digest } from '../oci/digest.js';
import type { ProgressListener } from '../oci/progress-event.js';
import { formatReference, type Reference } from '../oci/reference.js';
import type { PushCompression } from '../io/layer-compress.js';
import type { RegistryClient } from '../registry/client.js';
import { RegistryDestination } from '../registry/registry-destination.js';
import { copyImages } from '../transfer/copy-images.js';
import type { PushResult } from '../transfer/push-target.js';
import { pushResults } from './push.js';

export interface PushBundleOptions {
  /** Where each image goes: its reference in the bundle -> repository and tag. */
  retarget: (ref: string) => Reference;
  compression?: PushCompression;
  publicKey?: KeyObject | string;
  /** Blobs uploading at once (default 4). */
  jobs?: number;
  /** Where layers are spooled while they upload (default: the system temp directory). */
  spoolDir?: string;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
}

/**
 * `ferry push --bundle B REGISTRY[/PREFIX]`: the bundle as a one-pass source (the same as
 * `import BUNDLE` reads), copied into the registry destination without a store. Each layer is
 * spooled as it passes, so an upload cut off is retried and other repositories get it too; raw
 * layers go compressed (an earlier push's compressed forms are found and not sent again); layers
 * kept as pulled go up byte for byte, so those images keep their manifest digests. The bundle is
 * read to its end and checked before any manifest goes up.
 */
export async function pushBundle(client: RegistryClient, input: BundleInput, options: PushBundleOptions): Promise<PushResult[]> {
  const parent = options.spoolDir ?? tmpdir();
  await mkdir(parent, { recursive: true });
  const spoolDir = await mkdtemp(join(parent, 'ferry-push-'));
  let source: OpenedBundle | undefined;
  try {
    source = await openBundleSource(input, {
      ...(options.publicKey ? { publicKey: options.publicKey } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    // One target per name, its platforms together (they go up as an index).
    const byName = new Map<string, BundleTarget>();
    for (const t of source.targets) {
      const name = formatReference(t.ref);
      const group = byName.get(name);
      if (group === undefined) byName.set(name, { ref: options.retarget(name), images: [...t.images], ...(t.index ? { index: t.index } : {}) });
      else {
        group.images.push(...t.images);
        // The index travels when every image of the name came from the same one.
        if (group.index?.digest !== t.index?.digest) delete group.index;
      }
    }
    const uses = new Map<Digest, number>();
    const entries = source.entries;
    for (const t of source.targets) for (const image of t.images) for (const l of entries.get(image)!.layers) uses.set(l.blob, 1);
    source.expect(uses, (digest) => join(spoolDir, digest.replace(':', '-')), { keep: true, destination: 'the registry' });
    const targets = [...byName.values()];
    const opened = source;
    const copied = await copyImages(targets, new RegistryDestination(client, { ...(options.compression ? { compression: options.compression } : {}), reuseEarlier: true }), {
      beforeNames: () => opened.finish(),
      ...(options.jobs === undefined ? {} : { jobs: options.jobs }),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    return pushResults(targets, copied);
  } finally {
    await source?.close();
    await rm(spoolDir, { recursive: true, force: true });
  }
}
