import { SharedArchives } from '../archive/index.js';
import { UsageError } from '../errors.js';
import { parseReference } from '../oci/reference.js';
import { contentFromImages, type ServedImage } from '../registry/served-content.js';
import type { RegistryContent } from '../registry/server.js';
import type { Store } from '../store/index.js';
import { noRegistry, openSource, parseSourceSpec, type OpenedSource } from './locations.js';
import { storeContent } from './serve-store.js';

export interface ServedContent {
  content: RegistryContent;
  /** For the first line: "store /var/lib/ferry (7 images)", "3 images". */
  what: string;
  /** Closes the opened archives once the server has stopped. */
  close(): Promise<void>;
}

export interface ServeOptions {
  /** The store, opened read-only when no source is named. */
  store: () => Promise<Store>;
  onWarning?: (message: string) => void;
  /** Told before the store's tar-only layers are compressed (it may take a while). */
  onPreparing?: (store: Store) => void;
}

/**
 * What `ferry serve` serves: the store's images (layers kept only unpacked compressed once,
 * before the first client waits), or the images of OCI layouts and archives.
 */
export async function servedContent(sources: readonly string[], options: ServeOptions): Promise<ServedContent> {
  if (sources.length === 0) {
    const store = await options.store();
    const fromStore = storeContent(store, options.onWarning ? { onWarning: options.onWarning } : {});
    options.onPreparing?.(store);
    const names = await fromStore.prepare();
    return { content: fromStore, what: `store ${store.root} (${names} images)`, close: async () => undefined };
  }
  const opened: OpenedSource[] = [];
  const archives = new SharedArchives();
  const closeAll = async (): Promise<void> => {
    for (const s of opened) await s.close();
    await archives.close();
  };
  try {
    const served: ServedImage[] = [];
    for (const text of sources) {
      if (parseSourceSpec(text).kind === 'registry') throw new UsageError(`serve ${text}: give oci:DIR, oci-archive:FILE or docker-archive:FILE (the store is served when no source is given)`);
      const source = await openSource(text, {
        platforms: 'all',
        client: noRegistry('serve reads local images only'),
        archives,
      });
      opened.push(source);
      const first = source.images[0];
      if (first === undefined) continue;
      served.push({ ref: parseReference(first.ref), images: source.images.map((s) => s.image), ...(source.index ? { index: source.index } : {}) });
    }
    return { content: contentFromImages(served), what: `${served.length} images`, close: closeAll };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
