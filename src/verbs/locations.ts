import { resolve as resolvePath } from 'node:path';
import { openDockerArchive, openOciArchive, openOciLayout, type ArchiveOptions, type SharedArchives } from '../archive/index.js';
import { isFerryError, UsageError } from '../errors.js';
import type { Image, IndexInfo } from '../oci/image.js';
import type { Platform } from '../oci/platform.js';
import { formatReference, parseReference } from '../oci/reference.js';
import type { RegistryClient } from '../registry/client.js';
import { resolveRemote } from '../registry/remote-image.js';
import type { Store } from '../store/index.js';
import { openStoreName, type StoreName } from './store-names.js';

/**
 * Where images come from, as the user names them (skopeo's transport prefixes):
 * `docker-archive:FILE[:REF]`, `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`, else a registry reference.
 */
export type SourceSpec =
  | { kind: 'registry'; text: string }
  | { kind: 'docker-archive' | 'oci' | 'oci-archive'; path: string; selector: string | undefined };

export function parseSourceSpec(text: string): SourceSpec {
  const m = /^(docker-archive|oci-archive|oci):(.*)$/.exec(text);
  if (!m) return { kind: 'registry', text };
  const kind = m[1] as 'docker-archive' | 'oci' | 'oci-archive';
  const rest = m[2] ?? '';
  if (rest === '') throw new UsageError(`source "${text}": missing path`, { hint: `write ${kind}:PATH[:REF]` });
  // PATH[:REF]: the selector follows the first ':' after the path (paths with ':' are rare; skopeo splits the same way).
  const colon = rest.indexOf(':');
  return colon < 0
    ? { kind, path: rest, selector: undefined }
    : { kind, path: rest.slice(0, colon), selector: rest.slice(colon + 1) || undefined };
}

/** One image to carry, with the full reference it travels under. */
export interface SourceImage {
  ref: string;
  image: Image;
}

export interface OpenedSource {
  images: SourceImage[];
  index?: IndexInfo;
  /** True when a bare reference was found in the local store rather than pulled. */
  fromStore?: boolean;
  close(): Promise<void>;
}

/** For verbs that read local images only: a registry reference is refused with `why`. */
export function noRegistry(why: string): () => never {
  return () => {
    throw new UsageError(why);
  };
}

export interface OpenSourceOptions {
  platforms: Platform[] | 'all';
  /** Registry client, created on first need. */
  client: () => RegistryClient;
  /** The local store, consulted first for a bare reference (docker habit); absent with --pull. */
  store?: Store;
  /** Archive files opened once for every source of the command that names them (closed by its owner). */
  archives?: SharedArchives;
}

/**
 * The images a store holds under this name, or undefined when it has none, so the caller falls
 * back to the registry. Layers the store keeps only unpacked are read back as tars.
 */
async function fromStore(store: Store, text: string, platforms: Platform[] | 'all'): Promise<OpenedSource | undefined> {
  let name: StoreName;
  try {
    name = await openStoreName(store, text, platforms === 'all' ? undefined : platforms);
  } catch (err) {
    if (isFerryError(err, 'NOT_FOUND') || isFerryError(err, 'PLATFORM_NOT_FOUND')) return undefined;
    throw err;
  }
  const ref = formatReference(name.ref);
  const out: OpenedSource = { images: name.images.map((image) => ({ ref, image })), close: closeNothing, fromStore: true };
  if (name.index) out.index = name.index;
  return out;
}

/** The close of a source that holds nothing open: one function for all (a closure per source kept its scope). */
const closeNothing = async (): Promise<void> => undefined;

function nameFor(image: Image, fallback: string): string {
  return image.ref ? formatReference(image.ref) : fallback;
}

function withIndex(source: OpenedSource, index: IndexInfo | undefined): OpenedSource {
  if (index) source.index = index;
  return source;
}

/** Resolve a source spec to images (one per platform asked for). */
export async function openSource(text: string, options: OpenSourceOptions): Promise<OpenedSource> {
  const spec = parseSourceSpec(text);
  // Archive files through the command's shared opener, when it has one.
  const archiveOptions: ArchiveOptions = options.archives === undefined ? {} : { shared: options.archives };
  switch (spec.kind) {
    case 'registry': {
      const ref = parseReference(spec.text);
      if (options.store) {
        const local = await fromStore(options.store, spec.text, options.platforms);
        if (local) return local;
      }
      const resolved = await resolveRemote(options.client(), ref, options.platforms);
      const name = formatReference(ref.tag === undefined ? ref : { registry: ref.registry, repository: ref.repository, tag: ref.tag });
      const out: OpenedSource = { images: resolved.images.map((image) => ({ ref: name, image })), close: closeNothing };
      if (resolved.index) out.index = resolved.index;
      return out;
    }
    case 'oci': {
      const dir = resolvePath(spec.path);
      const resolved = await openOciLayout(dir, spec.selector, options.platforms);
      return withIndex({ images: resolved.images.map((image) => ({ ref: nameFor(image, spec.selector ?? dir), image })), close: closeNothing }, resolved.index);
    }
    case 'oci-archive': {
      const opened = await openOciArchive(resolvePath(spec.path), spec.selector, options.platforms, archiveOptions);
      return withIndex({ images: opened.images.map((image) => ({ ref: nameFor(image, spec.selector ?? spec.path), image })), close: opened.close }, opened.index);
    }
    case 'docker-archive': {
      const opened = await openDockerArchive(resolvePath(spec.path), spec.selector, archiveOptions);
      return { images: opened.images.map((image) => ({ ref: nameFor(image, spec.selector ?? spec.path), image })), close: opened.close };
    }
  }
}
