import type { KeyObject } from 'node:crypto';
import { FerryError, UsageError } from '../errors.js';
import type { PushCompression } from '../io/layer-compress.js';
import type { Platform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import type { RegistryClient } from '../registry/client.js';
import type { Store } from '../store/index.js';
import { parseDestination, reroot, type PushResult } from '../transfer/push-target.js';
import { noRegistry, openSource, parseSourceSpec } from './locations.js';
import { pushBundle } from './push-bundle.js';
import { pushImages, type PushRequest } from './push.js';
import { openAllStoreNames, openStoreName, storeLayerCache } from './store-names.js';

/** What `ferry push` was asked to send. */
export type PushSource =
  /** A store name (redis:7), or a local location (oci:DIR[:REF], docker-archive:FILE[:REF], oci-archive:FILE[:REF]); to `dest` or its own name. */
  | { kind: 'image'; image: string; dest?: string; platforms?: Platform[] | 'all' }
  /** Every store image, re-rooted under REGISTRY[/PREFIX]. */
  | { kind: 'all'; registry: string }
  /** Every image of a bundle, streamed without a store, re-rooted under REGISTRY[/PREFIX]. */
  | { kind: 'bundle'; bundle: string; registry: string; publicKey?: KeyObject | string; spoolDir?: string };

export interface PushFromOptions {
  /** The store, opened read-only on first need (a bundle or a local file needs none). */
  store: () => Promise<Store>;
  compression?: PushCompression;
  jobs?: number;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
}

/**
 * `ferry push`: whichever source was named, read as Images and copied into the registry by the
 * transfer engine (pushImages / pushBundle); the results say what went up, was there, or mounted.
 */
export async function pushFrom(client: RegistryClient, source: PushSource, options: PushFromOptions): Promise<PushResult[]> {
  const common = {
    ...(options.compression ? { compression: options.compression } : {}),
    ...(options.jobs === undefined ? {} : { jobs: options.jobs }),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  };
  if (source.kind === 'bundle' || source.kind === 'all') {
    const destination = parseDestination(source.registry);
    const retarget = (ref: string): Reference => reroot(parseReference(ref), destination);
    if (source.kind === 'bundle') {
      return pushBundle(client, source.bundle, {
        ...common,
        retarget,
        ...(source.publicKey === undefined ? {} : { publicKey: source.publicKey }),
        ...(source.spoolDir === undefined ? {} : { spoolDir: source.spoolDir }),
      });
    }
    const store = await options.store();
    const names = await openAllStoreNames(store);
    if (names.length === 0) throw new FerryError('NOT_FOUND', 'push --all: the store holds no images', { hint: 'ferry import loads images' });
    const requests: PushRequest[] = names.map((n) => ({ target: retarget(formatReference(n.ref)), images: n.images, sourceDigests: n.sourceDigests, ...(n.index ? { index: n.index } : {}) }));
    return pushImages(client, requests, { ...common, cache: storeLayerCache(store) });
  }
  const target = source.dest === undefined ? undefined : parseReference(source.dest);
  if (parseSourceSpec(source.image).kind !== 'registry') {
    const opened = await openSource(source.image, {
      platforms: source.platforms ?? 'all',
      client: noRegistry('push reads images from the store or local files; to copy between registries use skopeo copy'),
    });
    try {
      const first = opened.images[0];
      const to = target ?? (first?.image.ref ? parseReference(first.ref) : undefined);
      if (to === undefined) throw new UsageError(`push ${source.image}: the source names no image: give DEST`);
      return await pushImages(client, [{ target: to, images: opened.images.map((s) => s.image), ...(opened.index ? { index: opened.index } : {}) }], common);
    } finally {
      await opened.close();
    }
  }
  const store = await options.store();
  const name = await openStoreName(store, source.image, source.platforms === 'all' ? undefined : source.platforms);
  const request: PushRequest = { target: target ?? name.ref, images: name.images, sourceDigests: name.sourceDigests, ...(name.index ? { index: name.index } : {}) };
  return pushImages(client, [request], { ...common, cache: storeLayerCache(store) });
}
