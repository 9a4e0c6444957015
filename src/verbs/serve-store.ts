import { stat } from 'node:fs/promises';
import { fileStamp } from '../io/file-stamp.js';
import { messageOf } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Image, IndexInfo } from '../oci/image.js';
import { parseManifest } from '../oci/manifest.js';
import { formatReference, parseReference } from '../oci/reference.js';
import type { RegistryContent } from '../registry/server.js';
import type { RefEntry, Store } from '../store/index.js';
import { compressImage } from '../transfer/compressed-image.js';
import { buildIndex, indexIsComplete } from '../oci/rewrite-manifest.js';
import { contentFromImages, type ServedImage } from '../registry/served-content.js';
import { readableStoreImage, storeLayerCache } from './store-names.js';

/**
 * The store as registry content for `ferry serve`. Each store image is served as a registry
 * holds it: layers the store keeps as blobs byte for byte, the others compressed once with gzip
 * into the store's layer cache, under a manifest rewritten to name them (and an index over the
 * platforms of a name). A name is served under its repository path without the registry host
 * (`docker.io/library/redis:7` as `library/redis:7`), so ferry serve also works as a mirror for
 * its images' registries. refs.json is read again when it changes: new imports appear.
 */
export interface StoreContentOptions {
  onWarning?: (message: string) => void;
}

export interface StoreContent extends RegistryContent {
  /** Make every image servable now (compress what is needed); returns how many names. */
  prepare(): Promise<number>;
}

/** The index every entry of a name records, when the store holds it; `complete` when it lists only these images. */
async function storedIndex(store: Store, entries: readonly RefEntry[]): Promise<{ index: IndexInfo; complete: boolean } | undefined> {
  const digest = entries[0]?.indexDigest;
  if (digest === undefined || !entries.every((e) => e.indexDigest === digest) || !(await store.blobs.has(digest))) return undefined;
  const raw = await store.blobs.read(digest);
  const what = `index ${digest} of ${entries[0]!.name}`;
  const parsed = parseManifest(raw, undefined, what);
  if (parsed.kind !== 'index') return undefined;
  const index: IndexInfo = { digest, mediaType: parsed.mediaType, raw };
  return { index, complete: indexIsComplete(index, entries.map((e) => e.manifestDigest), what) };
}

export function storeContent(store: Store, options: StoreContentOptions = {}): StoreContent {
  const cache = storeLayerCache(store);
  const prepared = new Map<Digest, Promise<Image>>();
  let snapshot: { key: string; content: Promise<RegistryContent> } | undefined;

  const servedImage = (entry: RefEntry): Promise<Image> => {
    let job = prepared.get(entry.manifestDigest);
    if (job === undefined) {
      const ref = parseReference(entry.name);
      job = readableStoreImage(store, entry.manifestDigest, ref, cache).then((image) => compressImage(image, cache, 'gzip'));
      // A failure is reported to the client that asked; the next request tries again.
      job.catch(() => prepared.delete(entry.manifestDigest));
      prepared.set(entry.manifestDigest, job);
    }
    return job;
  };

  const build = async (): Promise<RegistryContent> => {
    const byName = new Map<string, RefEntry[]>();
    for (const entry of await store.refs.list()) byName.set(entry.name, [...(byName.get(entry.name) ?? []), entry]);
    const served: ServedImage[] = [];
    const taken = new Map<string, string>();
    for (const [name, entries] of byName) {
      const ref = parseReference(name);
      const key = `${ref.repository}:${ref.tag ?? ref.digest ?? ''}`;
      const other = taken.get(key);
      if (other !== undefined) {
        options.onWarning?.(`${name} is not served: ${other} has the same repository and tag`);
        continue;
      }
      taken.set(key, name);
      const images: Image[] = [];
      let source: Awaited<ReturnType<typeof storedIndex>>;
      try {
        for (const entry of entries) images.push(await servedImage(entry));
        source = await storedIndex(store, entries);
      } catch (err) {
        // One unreadable image must not take the others down: it is named, and left out.
        options.onWarning?.(`${name} is not served: ${messageOf(err)}`);
        continue;
      }
      const local = { registry: 'local', repository: ref.repository, ...(ref.tag !== undefined ? { tag: ref.tag } : {}) };
      const item: ServedImage = { ref: local, images };
      // The index the images came from is served byte for byte while they are unchanged (else
      // rewritten from it); one image is served as itself unless the store holds its whole index.
      if (images.length > 1 || source?.complete === true) {
        const children = images.map((image, i) => ({ sourceDigest: entries[i]!.manifestDigest, digest: image.digest, size: image.rawManifest.length, mediaType: image.mediaType, platform: image.platform }));
        const index = buildIndex(children, source?.index, `index of ${formatReference(ref)}`);
        item.index = { digest: index.digest, mediaType: index.mediaType, raw: index.raw };
      }
      served.push(item);
    }
    return contentFromImages(served);
  };

  const current = async (): Promise<RegistryContent> => {
    const st = await stat(store.refs.path, { bigint: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    const key = st === undefined ? 'none' : fileStamp(st);
    if (snapshot === undefined || snapshot.key !== key) {
      const content = build();
      content.catch(() => {
        if (snapshot?.content === content) snapshot = undefined;
      });
      snapshot = { key, content };
    }
    return snapshot.content;
  };

  return {
    async prepare() {
      const names = new Set((await store.refs.list()).map((e) => e.name));
      await current();
      return names.size;
    },
    manifest: async (repository, reference) => (await current()).manifest(repository, reference),
    blob: async (repository, digest) => (await current()).blob(repository, digest),
    tags: async (repository) => (await current()).tags(repository),
    repositories: async () => (await current()).repositories(),
  };
}
