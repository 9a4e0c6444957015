import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, isFerryError } from '../errors.js';
import type { Descriptor } from '../oci/descriptor.js';
import { Digester, digestOf, isDigest, sha256Digest, type Digest } from '../oci/digest.js';
import type { Image, Layer, OpenOptions } from '../oci/image.js';
import { MAX_MANIFEST_BYTES, configPlatform, parseImageConfig } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import { dockerSaveManifest } from '../oci/build-image.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import { layerFromBlob, layerFromTar } from '../io/layer-forms.js';
import { openArchiveFor, sniffCompression, type ArchiveOptions, type OpenedArchive } from './archive-file.js';
import { listSome } from './listing.js';
import { normalizeEntryName, type TarEntry, type TarIndex } from './tar-index.js';

/**
 * `docker save` / `podman save` archives: manifest.json lists each image's config file, tags and
 * layer files (`<id>/layer.tar` in the legacy form, `blobs/sha256/<hex>` since docker 25). There is
 * no registry manifest, so one is synthesised: a Docker schema 2 manifest whose layers are the
 * files as stored (plain tars named by their diffId, or gzip/zstd blobs kept byte for byte).
 */

export interface DockerArchiveEntry {
  /** Position in manifest.json; `@N` selects it. */
  readonly index: number;
  /** RepoTags as written in manifest.json (may be empty for untagged images). */
  readonly repoTags: readonly string[];
  readonly image: Image;
}

export interface DockerArchive {
  readonly file: string;
  readonly entries: DockerArchiveEntry[];
  /** Removes any temporary copy; the images are unreadable afterwards. */
  close(): Promise<void>;
}

interface ManifestJsonEntry {
  config: string;
  repoTags: string[];
  layers: string[];
  /** diffId -> descriptor of layers docker left out (foreign layers). */
  layerSources: Record<string, unknown>;
}

const BLOB_NAME_RE = /^(?:.*\/)?blobs\/sha256\/([a-f0-9]{64})$/;
const CONFIG_NAME_RE = /^(?:.*\/)?([a-f0-9]{64})\.json$/;

/**
 * The sha256 a file name claims: `blobs/sha256/<hex>` is content-addressed by definition (docker
 * 25+), and so is `<hex>.json` for a config (the image ID). `<hex>.tar` layer names are not
 * trusted: writers differ in what the hex is; the diffId is verified while streaming anyway.
 */
function digestFromName(name: string, config: boolean): Digest | undefined {
  const m = BLOB_NAME_RE.exec(name) ?? (config ? CONFIG_NAME_RE.exec(name) : null);
  return m ? sha256Digest(m[1]!) : undefined;
}

function parseManifestJson(bytes: Buffer, what: string): ManifestJsonEntry[] {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new FerryError('INVALID_MANIFEST', `${what}: manifest.json is not valid JSON`, { cause: err, hint: 'the archive is damaged; save it again' });
  }
  if (!Array.isArray(value) || value.length === 0) {
    throw new FerryError('INVALID_MANIFEST', `${what}: manifest.json is not a non-empty list of images`);
  }
  return value.map((v: unknown, i): ManifestJsonEntry => {
    const where = `${what}: manifest.json[${i}]`;
    if (typeof v !== 'object' || v === null) throw new FerryError('INVALID_MANIFEST', `${where} is not an object`);
    const o = v as Record<string, unknown>;
    if (typeof o.Config !== 'string' || o.Config === '') throw new FerryError('INVALID_MANIFEST', `${where}: Config is missing`);
    if (!Array.isArray(o.Layers) || !o.Layers.every((l): l is string => typeof l === 'string' && l !== '')) {
      throw new FerryError('INVALID_MANIFEST', `${where}: Layers is not a list of file names`);
    }
    const tags = o.RepoTags ?? [];
    if (!Array.isArray(tags) || !tags.every((t): t is string => typeof t === 'string')) {
      throw new FerryError('INVALID_MANIFEST', `${where}: RepoTags is not a list of names`);
    }
    const sources = typeof o.LayerSources === 'object' && o.LayerSources !== null ? (o.LayerSources as Record<string, unknown>) : {};
    return { config: o.Config, repoTags: tags, layers: o.Layers, layerSources: sources };
  });
}

function tryReference(text: string): Reference | undefined {
  try {
    return parseReference(text);
  } catch (err) {
    // A malformed tag only matters when it is used; selection then reports "no image named".
    if (isFerryError(err, 'INVALID_REFERENCE')) return undefined;
    throw err;
  }
}

function describe(entries: readonly ManifestJsonEntry[]): string {
  return listSome(entries.map((e, i) => `@${i} ${e.repoTags.length > 0 ? e.repoTags.join(' ') : '(untagged)'}`), 'its manifest.json');
}

class DockerArchiveReader {
  private readonly digestCache = new Map<number, Promise<Digest>>();

  constructor(
    private readonly index: TarIndex,
    readonly entries: ManifestJsonEntry[],
  ) {}

  get what(): string {
    return this.index.what;
  }

  static async open(index: TarIndex): Promise<DockerArchiveReader> {
    const entry = index.lookup('manifest.json');
    if (entry === undefined) {
      const oci = index.lookup('oci-layout') !== undefined;
      throw new FerryError('INVALID_MANIFEST', `${index.what}: not a docker-archive (no manifest.json)`, {
        hint: oci ? 'this is an OCI archive; read it as oci-archive:FILE' : 'expected the output of docker save or podman save',
      });
    }
    return new DockerArchiveReader(index, parseManifestJson(await index.read(entry, MAX_MANIFEST_BYTES), index.what));
  }

  private file(name: string, where: string): TarEntry {
    normalizeEntryName(name, `${this.what} ${where}`);
    const entry = this.index.lookup(name);
    if (entry === undefined) {
      throw new FerryError('NOT_FOUND', `${this.what}: ${where} "${name}" is missing from the archive`, {
        hint: 'the archive is incomplete or damaged; save it again',
      });
    }
    return entry;
  }

  private async configOf(i: number): Promise<{ raw: Buffer; digest: Digest }> {
    const e = this.entries[i]!;
    const where = `manifest.json[${i}].Config`;
    const raw = await this.index.read(this.file(e.config, where), MAX_MANIFEST_BYTES);
    const digest = digestOf(raw);
    const named = digestFromName(e.config, true);
    if (named !== undefined && named !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `${this.what}: ${where} "${e.config}": digest mismatch: content hashes to ${digest}`, {
        hint: 'the archive is corrupted; save or copy it again',
      });
    }
    return { raw, digest };
  }

  /** Index in manifest.json of the image `selector` names: a RepoTag, `@N`, or an image ID (config digest). */
  async select(selector: string | undefined): Promise<{ i: number; tag: string | undefined }> {
    const entries = this.entries;
    const firstTag = (i: number) => entries[i]!.repoTags[0];
    if (selector === undefined || selector === '') {
      if (entries.length === 1) return { i: 0, tag: firstTag(0) };
      throw new FerryError('USAGE', `${this.what}: holds ${entries.length} images; say which one: ${describe(entries)}`, {
        hint: 'add a tag or @N after the file name, e.g. docker-archive:FILE:app:1 or docker-archive:FILE:@1',
      });
    }
    const byIndex = /^@(\d+)$/.exec(selector);
    if (byIndex) {
      const i = Number(byIndex[1]);
      if (i >= entries.length) throw new FerryError('NOT_FOUND', `${this.what}: no image @${i}; it holds ${describe(entries)}`);
      return { i, tag: firstTag(i) };
    }
    if (isDigest(selector)) {
      for (let i = 0; i < entries.length; i++) {
        if ((await this.configOf(i)).digest === selector) return { i, tag: firstTag(i) };
      }
      throw new FerryError('NOT_FOUND', `${this.what}: no image with ID ${selector}; it holds ${describe(entries)}`);
    }
    const want = tryReference(selector);
    for (let i = 0; i < entries.length; i++) {
      for (const tag of entries[i]!.repoTags) {
        const have = tryReference(tag);
        if (tag === selector || (want && have && formatReference(want) === formatReference(have))) return { i, tag };
      }
    }
    throw new FerryError('NOT_FOUND', `${this.what}: no image named "${selector}"; it holds ${describe(entries)}`);
  }

  /** sha256 of a stored entry, read once (only gzip/zstd layers whose file name carries no digest). */
  private hashEntry(entry: TarEntry): Promise<Digest> {
    let p = this.digestCache.get(entry.offset);
    if (p === undefined) {
      p = (async () => {
        const d = new Digester();
        await pipeline(this.index.open(entry), async (source: AsyncIterable<Buffer>) => {
          for await (const chunk of source) d.update(chunk);
        });
        return d.digest();
      })();
      this.digestCache.set(entry.offset, p);
    }
    return p;
  }

  async image(i: number, tag: string | undefined): Promise<Image> {
    const e = this.entries[i]!;
    const what = `${this.what} image ${tag ?? `@${i}`}`;
    const { raw: rawConfig, digest: configDigest } = await this.configOf(i);
    const config = parseImageConfig(rawConfig, `${what} config ${e.config}`);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== e.layers.length) {
      throw new FerryError('INVALID_MANIFEST', `${what}: manifest.json lists ${e.layers.length} layers, the config has ${diffIds.length} diff_ids`);
    }
    const layers: Layer[] = [];
    for (const [j, name] of e.layers.entries()) {
      const diffId = diffIds[j]!;
      const where = `manifest.json[${i}].Layers[${j}]`;
      if (this.index.lookup(normalizeEntryName(name, `${this.what} ${where}`)) === undefined && e.layerSources[diffId] !== undefined) {
        throw new FerryError('UNSUPPORTED', `${what}: layer ${j} (${diffId}) is a foreign layer docker left out of the archive`, {
          hint: 'foreign layers (e.g. Windows base layers) must be fetched from their URLs; ferry carries only distributable layers',
        });
      }
      const entry = this.file(name, where);
      const compression = sniffCompression(await this.index.head(entry, 6));
      const named = digestFromName(name, false);
      const open = async (options?: OpenOptions): Promise<Readable> => this.index.open(entry, options);
      const layerWhat = `${what} layer ${j} "${name}"`;
      if (compression === 'none') {
        if (named !== undefined && named !== diffId) {
          throw new FerryError('DIGEST_MISMATCH', `${this.what}: ${where} "${name}" is named ${named}, the config's diff_id is ${diffId}`, {
            hint: 'the archive is corrupted or its files were shuffled; save it again',
          });
        }
        const descriptor: Descriptor = { mediaType: MediaType.dockerLayer, digest: diffId, size: entry.size };
        layers.push(layerFromTar({ descriptor, diffId, tarSize: entry.size, openTar: open, what: layerWhat }));
      } else if (compression === 'gzip' || compression === 'zstd') {
        const digest = named ?? (await this.hashEntry(entry));
        const mediaType = compression === 'gzip' ? MediaType.dockerLayerGzip : MediaType.dockerLayerZstd;
        layers.push(layerFromBlob({ descriptor: { mediaType, digest, size: entry.size }, diffId, openBlob: open, what: layerWhat }));
      } else {
        throw new FerryError('UNSUPPORTED', `${this.what}: ${where} "${name}" is compressed with neither gzip nor zstd`, {
          hint: 'save the image again with docker save or podman save',
        });
      }
    }
    const { raw: rawManifest, manifest } = dockerSaveManifest({ digest: configDigest, size: rawConfig.length }, layers.map((l) => l.descriptor));
    return {
      ref: tag === undefined ? undefined : tryReference(tag),
      digest: digestOf(rawManifest),
      mediaType: MediaType.dockerManifest,
      rawManifest,
      manifest,
      configDigest,
      rawConfig,
      config,
      platform: configPlatform(config),
      layers,
    };
  }
}

/** One reader per opened archive: a shared archive's manifest.json is parsed once, not per image. */
const readers = new WeakMap<TarIndex, Promise<DockerArchiveReader>>();

function readerOf(index: TarIndex): Promise<DockerArchiveReader> {
  let reader = readers.get(index);
  if (reader === undefined) {
    reader = DockerArchiveReader.open(index);
    readers.set(index, reader);
  }
  return reader;
}

/**
 * Read one image of a docker-archive. `selector`: a RepoTag (`app:1`, normalised like docker,
 * so `docker.io/library/app:1` matches too), `@N` for the N-th image, or an image ID
 * (`sha256:<config digest>`); an archive of one image needs none. Layers stream from the
 * archive file; call `close()` when done (a compressed archive was decompressed to a temp file).
 */
export async function openDockerArchive(file: string, selector?: string, options: ArchiveOptions = {}): Promise<OpenedArchive> {
  const archive = await openArchiveFor(file, `docker-archive ${file}`, options);
  try {
    const reader = await readerOf(archive.index);
    const { i, tag } = await reader.select(selector);
    return { images: [await reader.image(i, tag)], close: archive.close };
  } catch (err) {
    await archive.close();
    throw err;
  }
}

/** Every image of a docker-archive, in manifest.json order. */
export async function listDockerArchive(file: string, options: ArchiveOptions = {}): Promise<DockerArchive> {
  const archive = await openArchiveFor(file, `docker-archive ${file}`, options);
  try {
    const reader = await readerOf(archive.index);
    const entries: DockerArchiveEntry[] = [];
    for (const [i, e] of reader.entries.entries()) {
      entries.push({ index: i, repoTags: e.repoTags, image: await reader.image(i, e.repoTags[0]) });
    }
    return { file, entries, close: archive.close };
  } catch (err) {
    await archive.close();
    throw err;
  }
}
