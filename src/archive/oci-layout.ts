import { FerryError, isFerryError } from '../errors.js';
import type { Descriptor } from '../oci/descriptor.js';
import { digestAlgorithm, digestHex, digestOf, isDigest, type Digest } from '../oci/digest.js';
import type { Image, Layer, Resolved } from '../oci/image.js';
import {
  MAX_MANIFEST_BYTES,
  checkLayers,
  configPlatform,
  parseImageConfig,
  parseManifest,
  type ImageConfig,
  type ImageIndexManifest,
  type ImageManifest,
} from '../oci/manifest.js';
import { MediaType, isImageManifestMediaType, isIndexMediaType } from '../oci/media-types.js';
import { formatPlatform, hostPlatform, platformMatches, type Platform } from '../oci/platform.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import { keptBytes } from '../io/kept-bytes.js';
import { layerFromBlob } from '../io/layer-forms.js';
import { dirSource, type LayoutSource } from './layout-source.js';
import { listSome } from './listing.js';

/** The annotation that names an index.json entry (a tag like `1.0`, or a full reference). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** containerd and docker 25+ put the full image name here. */
const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';
/** Indexes nested deeper than this are refused: no real image needs it, a loop would never end. */
const MAX_INDEX_DEPTH = 4;

/** Which platforms to take from a multi-platform index; default: the host's. */
export type PlatformRequest = Platform[] | 'all';

/** One entry of a layout's index.json. */
export interface LayoutEntry {
  /** `org.opencontainers.image.ref.name` (or containerd's image name), when the entry has one. */
  readonly name: string | undefined;
  readonly descriptor: Descriptor;
}

/** `blobs/<alg>/<hex>`: only ever built from a validated digest, so it cannot leave the layout. */
export function blobPath(digest: Digest): string {
  if (!isDigest(digest)) throw new FerryError('INVALID_DIGEST', `invalid digest "${String(digest)}"`);
  return `blobs/${digestAlgorithm(digest)}/${digestHex(digest)}`;
}

/** An entry's names, the full one first: docker 25+ puts only the tag (`latest`) in ref.name. */
function entryNames(d: Descriptor): string[] {
  const names: string[] = [];
  for (const key of [CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION]) {
    const v = d.annotations?.[key];
    if (v !== undefined && v !== '' && !names.includes(v)) names.push(v);
  }
  return names;
}

/** A name as a Reference when it is a valid one (`app`, `localhost:5000/app:1`), else undefined. */
function referenceOf(name: string | undefined): Reference | undefined {
  if (name === undefined) return undefined;
  try {
    return parseReference(name);
  } catch (err) {
    // Names such as "v1+build" are valid OCI ref names but not image references: no ref then.
    if (isFerryError(err, 'INVALID_REFERENCE')) return undefined;
    throw err;
  }
}

/** Read a small blob (manifest, index, config) whole and check its size and digest. */
export async function readVerifiedBlob(source: LayoutSource, desc: Descriptor, what: string): Promise<Buffer> {
  const bytes = await source.read(blobPath(desc.digest), MAX_MANIFEST_BYTES);
  if (bytes.length !== desc.size) {
    throw new FerryError('SIZE_MISMATCH', `${what}: blob ${desc.digest} is ${bytes.length} bytes, its descriptor says ${desc.size}`);
  }
  const actual = digestOf(bytes, digestAlgorithm(desc.digest));
  if (actual !== desc.digest) {
    throw new FerryError('DIGEST_MISMATCH', `${what}: blob ${desc.digest}: digest mismatch: content hashes to ${actual}`, {
      hint: 'the layout is corrupted; copy it again',
    });
  }
  // Kept as long as the copy runs: packed with the other kept documents (see keptBytes).
  return keptBytes(bytes);
}

interface LayoutIndex {
  raw: Buffer;
  /** The source's stamp of index.json when it was read (see LayoutSource.stamp). */
  stamp: string | undefined;
  /** Its entries, and which of them each name selects (in index order). */
  entries: readonly LayoutEntry[];
  byName: ReadonlyMap<string, readonly LayoutEntry[]>;
}

/**
 * The last index.json parsed per layout (by its `what`, which names the path), reused while its
 * stamp, or else its bytes, are the same: `export oci:DIR:a oci:DIR:b ...` opens the layout once
 * per image, and reading, parsing or scanning an index of N entries N times made exporting N
 * images quadratic. Callers only read it.
 */
const parsedIndexes = new Map<string, LayoutIndex>();

/**
 * Forget the parsed indexes: a command calls it once it has opened its sources, so that an index
 * of thousands of entries is not held while it copies (the images keep what they need).
 */
export function forgetLayoutIndexes(): void {
  parsedIndexes.clear();
}

function indexEntries(index: ImageIndexManifest): Pick<LayoutIndex, 'entries' | 'byName'> {
  const entries: LayoutEntry[] = [];
  const byName = new Map<string, LayoutEntry[]>();
  for (const descriptor of index.manifests) {
    const names = entryNames(descriptor);
    const entry = { name: names[0], descriptor };
    entries.push(entry);
    for (const name of names) {
      const list = byName.get(name);
      if (list === undefined) byName.set(name, [entry]);
      else list.push(entry);
    }
  }
  return { entries, byName };
}

async function readLayoutIndex(source: LayoutSource): Promise<LayoutIndex> {
  const what = source.what;
  if ((await source.size('oci-layout')) === undefined) {
    throw new FerryError('INVALID_MANIFEST', `${what}: not an OCI image layout (no oci-layout file)`, {
      hint: 'expected a directory or archive written by skopeo copy oci:, umoci, buildah or ferry',
    });
  }
  const layoutBytes = await source.read('oci-layout', 64 * 1024);
  let version: unknown;
  try {
    version = (JSON.parse(layoutBytes.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
  } catch (err) {
    throw new FerryError('INVALID_MANIFEST', `${what}: oci-layout is not valid JSON`, { cause: err });
  }
  if (typeof version !== 'string' || !/^1\.\d+\.\d+/.test(version)) {
    throw new FerryError('UNSUPPORTED', `${what}: unsupported OCI layout version ${JSON.stringify(version) ?? 'undefined'}`, {
      hint: 'ferry reads image layout version 1.x',
    });
  }
  // Taken before the read: a change between the two only costs another read next time.
  const stamp = await source.stamp?.('index.json');
  const cached = parsedIndexes.get(what);
  if (cached !== undefined && stamp !== undefined && cached.stamp === stamp) return cached;
  const raw = await source.read('index.json', MAX_MANIFEST_BYTES);
  if (cached !== undefined && cached.raw.equals(raw)) {
    cached.stamp = stamp;
    return cached;
  }
  const parsed = parseManifest(raw, MediaType.ociIndex, `${what} index.json`);
  if (parsed.kind !== 'index') throw new FerryError('INVALID_MANIFEST', `${what}: index.json is an image manifest, not an index`);
  const result = { raw, stamp, ...indexEntries(parsed.manifest) };
  parsedIndexes.set(what, result);
  return result;
}

function describeEntries(entries: readonly LayoutEntry[]): string {
  return listSome([...new Set(entries.map((e) => e.name ?? `(unnamed ${e.descriptor.digest})`))], 'its index.json');
}

function sameReference(a: string, b: string): boolean {
  const ra = referenceOf(a);
  const rb = referenceOf(b);
  return ra !== undefined && rb !== undefined && formatReference(ra) === formatReference(rb);
}

interface Selection {
  /** The entries (or a nested manifest found by digest) to resolve; several = one per platform. */
  readonly descriptors: Descriptor[];
  readonly name: string | undefined;
}

/** Search nested indexes for a manifest of this digest (a platform image picked by digest). */
async function findNested(source: LayoutSource, desc: Descriptor, digest: string, depth: number): Promise<Descriptor | undefined> {
  if (!isIndexMediaType(desc.mediaType) || depth > MAX_INDEX_DEPTH) return undefined;
  const index = await loadIndex(source, desc, `${source.what} index ${desc.digest}`);
  for (const child of index.manifest.manifests) {
    if (child.digest === digest) return child;
    const found = await findNested(source, child, digest, depth + 1);
    if (found) return found;
  }
  return undefined;
}

async function selectEntries(source: LayoutSource, layout: LayoutIndex, selector: string | undefined): Promise<Selection> {
  const what = source.what;
  const { entries } = layout;
  if (entries.length === 0) {
    throw new FerryError('NOT_FOUND', `${what}: the layout holds no images (index.json is empty)`);
  }
  if (selector === undefined || selector === '') {
    const names = new Set(entries.map((e) => e.name));
    // Several entries of one name are one image in several platforms (how ferry bundles list them).
    if (entries.length === 1 || (names.size === 1 && entries[0]!.name !== undefined)) {
      return { descriptors: entries.map((e) => e.descriptor), name: entries[0]!.name };
    }
    throw new FerryError('USAGE', `${what}: holds ${entries.length} images; say which one: ${describeEntries(entries)}`, {
      hint: 'add the name or digest after the path, e.g. oci:DIR:NAME or oci-archive:FILE:sha256:...',
    });
  }
  if (isDigest(selector)) {
    const top = entries.filter((e) => e.descriptor.digest === selector);
    if (top.length > 0) return { descriptors: [top[0]!.descriptor], name: top[0]!.name };
    for (const e of entries) {
      const found = await findNested(source, e.descriptor, selector, 1);
      if (found) return { descriptors: [found], name: e.name };
    }
    throw new FerryError('NOT_FOUND', `${what}: no image with digest ${selector}`, { hint: `the layout holds: ${describeEntries(entries)}` });
  }
  let matched = layout.byName.get(selector) ?? [];
  if (matched.length === 0) matched = entries.filter((e) => entryNames(e.descriptor).some((n) => sameReference(n, selector)));
  if (matched.length === 0) {
    throw new FerryError('NOT_FOUND', `${what}: no image named "${selector}"`, { hint: `the layout holds: ${describeEntries(entries)}` });
  }
  return { descriptors: matched.map((e) => e.descriptor), name: matched[0]!.name ?? selector };
}

async function loadIndex(source: LayoutSource, desc: Descriptor, what: string): Promise<{ raw: Buffer; manifest: ImageIndexManifest; mediaType: string }> {
  const raw = await readVerifiedBlob(source, desc, what);
  const parsed = parseManifest(raw, desc.mediaType, `${what}`);
  if (parsed.kind !== 'index') throw new FerryError('INVALID_MANIFEST', `${what}: ${desc.digest} is an image manifest, the descriptor says index`);
  return { raw, manifest: parsed.manifest, mediaType: parsed.mediaType };
}

/**
 * An image of a layout. An export holds every image it was given until the bundle's header is
 * written, and then while the layers stream: so it keeps its manifest's and config's bytes, not
 * their parsed forms, and makes its layers when asked (each is read a few times per copy). At a
 * thousand images the parsed documents and layer objects were most of an export's memory.
 */
class LayoutImage implements Image {
  constructor(
    private readonly source: LayoutSource,
    /** The index.json entry's name, when it has one. */
    private readonly name: string | undefined,
    readonly digest: Digest,
    readonly mediaType: string,
    readonly rawManifest: Buffer,
    readonly configDigest: Digest,
    readonly rawConfig: Buffer,
    readonly platform: Platform,
    /** The platform index.json's descriptor gave, as errors name the image. */
    private readonly listedPlatform: Platform | undefined,
  ) {}

  get ref(): Reference | undefined {
    return referenceOf(this.name);
  }

  private get what(): string {
    return layoutImageWhat(this.source, this.name, this.digest, this.listedPlatform);
  }

  get manifest(): ImageManifest {
    return imageManifestOf(this.rawManifest, this.mediaType, this.what, this.digest).manifest;
  }

  get config(): ImageConfig {
    return parseImageConfig(this.rawConfig, `${this.what} config ${this.configDigest}`);
  }

  get layers(): Layer[] {
    const diffIds = this.config.rootfs.diff_ids;
    const what = this.what;
    // Sizes were checked against the files when the image was loaded.
    return this.manifest.layers.map((descriptor, i) => layerFromBlob({ descriptor, diffId: diffIds[i]!, openBlob: blobOpener(this.source, descriptor), what }));
  }
}

/** Made outside the getter: a closure made there keeps its scope (the config's diff_ids) as long as the layer. */
function blobOpener(source: LayoutSource, descriptor: Descriptor): Layer['blob'] {
  return (options) => source.open(blobPath(descriptor.digest), options, descriptor.size);
}

/** Names a layout's image in errors: the layout, the entry's name (else the digest), the platform its entry gave. */
function layoutImageWhat(source: LayoutSource, name: string | undefined, digest: Digest, platform: Platform | undefined): string {
  return `${source.what} image ${name ?? digest}${platform ? ` (${formatPlatform(platform)})` : ''}`;
}

/** A layout image's manifest parsed: an image manifest, not an index, whatever its descriptor said. */
function imageManifestOf(raw: Buffer, mediaType: string, what: string, digest: Digest): { mediaType: string; manifest: ImageManifest } {
  const parsed = parseManifest(raw, mediaType, `${what} manifest ${digest}`);
  if (parsed.kind !== 'image') throw new FerryError('INVALID_MANIFEST', `${what}: ${digest} is an index, the descriptor says ${mediaType}`);
  return parsed;
}

/** Read one image (manifest, config, layer descriptors) from the layout, checked now; layers open lazily. */
export async function loadLayoutImage(source: LayoutSource, desc: Descriptor, name: string | undefined): Promise<Image> {
  const what = layoutImageWhat(source, name, desc.digest, desc.platform);
  const rawManifest = await readVerifiedBlob(source, desc, what);
  // Parsed to be checked, then dropped: the image parses again when asked, its strings (digests,
  // media types) the copies in the process's table, so that what a copy keeps of them is shared.
  const { mediaType, manifest } = imageManifestOf(rawManifest, desc.mediaType, what, desc.digest);
  checkLayers(manifest, what);
  const rawConfig = await readVerifiedBlob(source, manifest.config, `${what} config`);
  const config = parseImageConfig(rawConfig, `${what} config ${manifest.config.digest}`);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new FerryError('INVALID_MANIFEST', `${what}: manifest lists ${manifest.layers.length} layers, config has ${diffIds.length} diff_ids`);
  }
  for (const [i, descriptor] of manifest.layers.entries()) {
    const path = blobPath(descriptor.digest);
    const size = await source.size(path);
    if (size === undefined) {
      throw new FerryError('NOT_FOUND', `${what}: layer ${i} blob ${descriptor.digest} is missing (${path})`, {
        hint: 'the layout is incomplete; copy it again',
      });
    }
    if (size !== descriptor.size) {
      throw new FerryError('SIZE_MISMATCH', `${what}: layer ${i} blob ${descriptor.digest} is ${size} bytes, the manifest says ${descriptor.size}`);
    }
  }
  return new LayoutImage(source, name, desc.digest, mediaType, rawManifest, manifest.config.digest, rawConfig, desc.platform ?? configPlatform(config), desc.platform);
}

/** Flatten (nested) indexes into the image manifests they list; artifacts are left out. */
async function expand(source: LayoutSource, desc: Descriptor, depth: number): Promise<Descriptor[]> {
  if (isIndexMediaType(desc.mediaType)) {
    if (depth > MAX_INDEX_DEPTH) {
      throw new FerryError('UNSUPPORTED', `${source.what}: indexes nested more than ${MAX_INDEX_DEPTH} deep (at ${desc.digest})`);
    }
    const index = await loadIndex(source, desc, `${source.what} index ${desc.digest}`);
    const out: Descriptor[] = [];
    for (const child of index.manifest.manifests) out.push(...(await expand(source, child, depth + 1)));
    return out;
  }
  return isImageManifestMediaType(desc.mediaType) ? [desc] : [];
}

function isAttestation(p: Platform): boolean {
  // buildkit lists provenance/SBOM manifests as platform unknown/unknown.
  return p.os === 'unknown' || p.architecture === 'unknown';
}

async function pickPlatforms(
  source: LayoutSource,
  candidates: Descriptor[],
  name: string | undefined,
  platforms: PlatformRequest,
): Promise<Image[]> {
  const what = `${source.what} image ${name ?? candidates[0]?.digest ?? ''}`;
  // Entries without a platform in their descriptor are read to learn it from the config.
  const known: { desc: Descriptor; platform: Platform; image?: Image }[] = [];
  for (const desc of candidates) {
    if (desc.platform) known.push({ desc, platform: desc.platform });
    else {
      const image = await loadLayoutImage(source, desc, name);
      known.push({ desc, platform: image.platform, image });
    }
  }
  const chosen: typeof known = [];
  if (platforms === 'all') {
    chosen.push(...known.filter((k) => !isAttestation(k.platform)));
  } else {
    for (const want of platforms) {
      const hit = known.find((k) => !isAttestation(k.platform) && platformMatches(want, k.platform));
      if (hit === undefined) {
        const available = [...new Set(known.filter((k) => !isAttestation(k.platform)).map((k) => formatPlatform(k.platform)))];
        throw new FerryError('PLATFORM_NOT_FOUND', `${what}: no image for platform ${formatPlatform(want)}; it has ${available.join(', ') || 'none'}`, {
          hint: 'choose one with --platform, or --platform all',
        });
      }
      if (!chosen.includes(hit)) chosen.push(hit);
    }
  }
  if (chosen.length === 0) throw new FerryError('NOT_FOUND', `${what}: lists no images`);
  const images: Image[] = [];
  for (const k of chosen) images.push(k.image ?? (await loadLayoutImage(source, k.desc, name)));
  return images;
}

/** List the entries of a layout's index.json (names and digests, nothing else read). */
export async function listLayoutEntries(source: LayoutSource): Promise<LayoutEntry[]> {
  return [...(await readLayoutIndex(source)).entries];
}

/** Resolve a selector in a layout read from any source (directory, oci-archive, docker save). */
export async function resolveLayout(source: LayoutSource, selector?: string, platforms: PlatformRequest = [hostPlatform()]): Promise<Resolved> {
  const { descriptors, name } = await selectEntries(source, await readLayoutIndex(source), selector);
  if (descriptors.length === 1) {
    const desc = descriptors[0]!;
    if (isIndexMediaType(desc.mediaType)) {
      const index = await loadIndex(source, desc, `${source.what} image ${name ?? desc.digest} index ${desc.digest}`);
      const candidates: Descriptor[] = [];
      for (const child of index.manifest.manifests) candidates.push(...(await expand(source, child, 2)));
      const images = await pickPlatforms(source, candidates, name, platforms);
      return { images, index: { digest: desc.digest, mediaType: index.mediaType, raw: index.raw } };
    }
    if (!isImageManifestMediaType(desc.mediaType)) {
      throw new FerryError('UNSUPPORTED', `${source.what}: ${name ?? desc.digest} is not an image (media type ${desc.mediaType})`);
    }
    // A single-platform image is taken whatever platform was asked for, as registries serve it.
    return { images: [await loadLayoutImage(source, desc, name)] };
  }
  const candidates: Descriptor[] = [];
  for (const desc of descriptors) candidates.push(...(await expand(source, desc, 1)));
  return { images: await pickPlatforms(source, candidates, name, platforms) };
}

/**
 * One source per layout directory, shared by the images read from it (it holds nothing but the
 * path): `export oci:DIR:a oci:DIR:b ...` kept one per image, a set of closures each.
 */
const layoutDirs = new Map<string, LayoutSource>();

function layoutDir(dir: string): LayoutSource {
  let source = layoutDirs.get(dir);
  if (source === undefined) {
    source = dirSource(dir);
    layoutDirs.set(dir, source);
  }
  return source;
}

/**
 * Read an OCI image layout directory. `selector` is an entry's ref name (`app`, `1.0`, or a full
 * reference) or a digest; without one, a layout of one image needs none. An index yields one
 * image per requested platform (default: the host's).
 */
export async function openOciLayout(dir: string, selector?: string, platforms?: PlatformRequest): Promise<Resolved> {
  return resolveLayout(layoutDir(dir), selector, platforms);
}

/** The entries of an OCI layout directory's index.json. */
export async function listOciLayout(dir: string): Promise<LayoutEntry[]> {
  return listLayoutEntries(layoutDir(dir));
}
