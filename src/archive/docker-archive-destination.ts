import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, messageOf } from '../errors.js';
import { digestHex, type Digest } from '../oci/digest.js';
import type { BlobPut, BlobPutOptions, CopyTarget, ImageDestination, LayerPut, ManifestPut, OpenBytes, PutOptions } from '../oci/destination.js';
import type { Image, Layer } from '../oci/image.js';
import { rewriteManifest } from '../oci/rewrite-manifest.js';
import { layoutIndex } from '../oci/build-image.js';
import { MediaType } from '../oci/media-types.js';
import { familiarReference, formatReference, type Reference } from '../oci/reference.js';
import { Ingestion, tempPathFor } from '../io/atomic-file.js';
import { encodeTarHeader, padding, TAR_END } from '../io/tar-format.js';

/**
 * Write a docker-archive as docker 25+ does, which `docker load`, `podman load` and skopeo's
 * `docker-archive:` read: an OCI layout (oci-layout, index.json, blobs/sha256/) whose manifests
 * point at uncompressed layer tars named by their diffId, plus the classic manifest.json
 * (Config, RepoTags, Layers as blobs/sha256 paths) and repositories. RepoTags are full names
 * (`docker.io/library/redis:7`): docker and containerd read them as docker writes them, and podman
 * keeps them as they are instead of filing a short name under `localhost/`. Layers shared by several
 * images are written once. The file appears only when complete (temp file, fsync, rename).
 *
 * Entry order: oci-layout, then per image its layers and config, then its manifest (it names its
 * layers' tar sizes, known once they are written); index.json, manifest.json, repositories last.
 */
export interface DockerArchiveOptions {
  /** Seconds since the epoch for every entry (default: 0, so the same images give the same bytes). */
  mtime?: number;
}

/** One ustar block (never a PAX header: streamed entries' headers are rewritten in place); sizes over 8 GiB in GNU base-256. */
function header(name: string, size: number, mtime: number, type: '0' | '5'): Buffer {
  if (Buffer.byteLength(name) > 100) throw new FerryError('UNSUPPORTED', `docker-archive entry name too long: ${name}`);
  return encodeTarHeader({ name, typeflag: type, mode: type === '5' ? 0o755 : 0o644, size, mtime }, { extensions: 'none' });
}

/** Where the tar goes: a file (headers of streamed entries are patched in place) or a stream. */
interface Sink {
  readonly seekable: boolean;
  position: number;
  write(data: Buffer): Promise<void>;
  writeAt(data: Buffer, position: number): Promise<void>;
}

function fileSink(file: Ingestion): Sink {
  const sink: Sink = {
    seekable: true,
    position: 0,
    async write(data) {
      await file.write(data, sink.position);
      sink.position += data.length;
    },
    writeAt: (data, position) => file.write(data, position),
  };
  return sink;
}

function streamSink(out: Writable): Sink {
  const sink: Sink = {
    seekable: false,
    position: 0,
    write: (data) =>
      new Promise<void>((resolve, reject) => {
        sink.position += data.length;
        out.write(data, (err) => (err ? reject(err) : resolve()));
      }),
    writeAt: () => Promise.reject(new Error('not seekable')),
  };
  return sink;
}

class ArchiveWriter {
  constructor(
    private readonly sink: Sink,
    private readonly mtime: number,
  ) {}

  async file(name: string, data: Buffer): Promise<void> {
    await this.sink.write(header(name, data.length, this.mtime, '0'));
    await this.sink.write(data);
    await this.sink.write(padding(data.length));
  }

  async directory(name: string): Promise<void> {
    await this.sink.write(header(name, 0, this.mtime, '5'));
  }

  /** Stream an entry; its size is `size` when known (checked), else measured and the header patched. */
  async stream(name: string, source: Readable, size: number | undefined, onBytes: (n: number) => void): Promise<number> {
    const headerAt = this.sink.position;
    if (size === undefined && !this.sink.seekable) throw new Error(`size of ${name} unknown on a stream`);
    await this.sink.write(header(name, size ?? 0, this.mtime, '0'));
    let written = 0;
    const sink = this.sink;
    await pipeline(
      source,
      new Writable({
        write(chunk: Buffer, _enc, done): void {
          written += chunk.length;
          onBytes(chunk.length);
          sink.write(chunk).then(() => done(), done);
        },
      }),
    );
    if (size !== undefined && written !== size) {
      throw new FerryError('SIZE_MISMATCH', `docker-archive entry ${name}: ${written} bytes, expected ${size}`);
    }
    if (size === undefined) await this.sink.writeAt(header(name, written, this.mtime, '0'), headerAt);
    await this.sink.write(padding(written));
    return written;
  }

  async end(): Promise<void> {
    await this.sink.write(TAR_END);
  }
}

async function measure(layer: Layer, signal: AbortSignal | undefined): Promise<number> {
  let size = 0;
  await pipeline(
    await layer.tar(signal ? { signal } : {}),
    new Writable({
      write(chunk: Buffer, _enc, done): void {
        size += chunk.length;
        done();
      },
    }),
  );
  return size;
}

interface Entry {
  manifestDigest: Digest;
  manifestSize: number;
  mediaType: string;
  configDigest: Digest;
  diffIds: Digest[];
  tags: Reference[];
}

const blobName = (d: Digest): string => `blobs/sha256/${digestHex(d)}`;

/**
 * A docker-archive file (written atomically) or stream as a copy destination. Layers are written
 * as uncompressed tars once each; names are collected and written with the indexes at commit.
 */
export class DockerArchiveDestination implements ImageDestination {
  readonly name: string;
  /** One tar stream: one entry at a time. */
  readonly maxConcurrency = 1;
  private writer: ArchiveWriter | undefined;
  /** The archive file being written (io's Ingestion: it appears at `output` only at commit). */
  private file: Ingestion | undefined;
  private readonly tarSizes = new Map<string, number>();
  private readonly written = new Set<string>();
  private readonly entries: Entry[] = [];

  constructor(
    private readonly output: string | Writable,
    private readonly options: DockerArchiveOptions = {},
  ) {
    this.name = typeof output === 'string' ? `docker-archive ${output}` : 'docker-archive (stream)';
  }

  private get seekable(): boolean {
    return typeof this.output === 'string';
  }

  private async open(): Promise<ArchiveWriter> {
    if (this.writer !== undefined) return this.writer;
    const mtime = this.options.mtime ?? 0;
    if (typeof this.output !== 'string') this.writer = new ArchiveWriter(streamSink(this.output), mtime);
    else {
      this.file = await Ingestion.open(tempPathFor(this.output), 0o644);
      this.writer = new ArchiveWriter(fileSink(this.file), mtime);
    }
    await this.writer.file('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
    await this.writer.directory('blobs/');
    await this.writer.directory('blobs/sha256/');
    return this.writer;
  }

  scopeOf(): string {
    return '';
  }

  /** Layers are found by diffId here: one tar for every image that has it. */
  layerKey(): undefined {
    return undefined;
  }

  async prepare(): Promise<void> {
    await this.wrap(() => this.open());
  }

  async hasBlob(_target: CopyTarget, digest: Digest): Promise<boolean> {
    return this.written.has(digest);
  }

  async putBlob(_target: CopyTarget, descriptor: { digest: Digest; size: number }, openBytes: OpenBytes, options: BlobPutOptions): Promise<BlobPut> {
    if (this.written.has(descriptor.digest)) return { written: 0, existed: true };
    const writer = await this.open();
    await this.wrap(async () => writer.stream(blobName(descriptor.digest), await openBytes(options.signal ? { signal: options.signal } : {}), descriptor.size, () => undefined));
    this.written.add(descriptor.digest);
    return { written: descriptor.size, existed: false };
  }

  async putLayer(_target: CopyTarget, image: Image, index: number, options: PutOptions): Promise<LayerPut> {
    const layer = image.layers[index]!;
    const docker = image.mediaType === MediaType.dockerManifest;
    const mediaType = docker ? MediaType.dockerLayer : MediaType.ociLayer;
    const present = this.tarSizes.get(layer.diffId);
    if (present !== undefined) return { descriptor: { mediaType, digest: layer.diffId, size: present }, existed: true, written: 0, present };
    const writer = await this.open();
    const { signal } = options;
    const known = layer.tarSize ?? (this.seekable ? undefined : await measure(layer, signal));
    const id = `save:${layer.diffId}`;
    const label = `save layer ${digestHex(layer.diffId).slice(0, 12)}`;
    options.onProgress?.({ kind: 'start', id, label, ...(known !== undefined ? { total: known } : {}) });
    const size = await this.wrap(async () => writer.stream(blobName(layer.diffId), await layer.tar(signal ? { signal } : {}), known, (n) => options.onProgress?.({ kind: 'advance', id, bytes: n })));
    options.onProgress?.({ kind: 'done', id, label, bytes: size });
    this.tarSizes.set(layer.diffId, size);
    this.written.add(layer.diffId);
    return { descriptor: { mediaType, digest: layer.diffId, size }, existed: false, written: size, present: 0 };
  }

  /** The manifest pointing at the uncompressed tars (like docker 25's): layer descriptors replaced, everything else kept. */
  async putManifest(target: CopyTarget, image: Image, layers: readonly LayerPut[]): Promise<ManifestPut> {
    const what = `manifest of ${image.ref === undefined ? image.digest : formatReference(image.ref)}`;
    const manifest = rewriteManifest(image.rawManifest, image.mediaType, layers.map((l) => ({ digest: l.descriptor.digest, size: l.descriptor.size, compression: 'none' as const })), what);
    if (!this.written.has(manifest.digest)) {
      const writer = await this.open();
      await this.wrap(() => writer.file(blobName(manifest.digest), manifest.raw));
      this.written.add(manifest.digest);
    }
    if (!this.entries.some((e) => e.manifestDigest === manifest.digest)) {
      this.entries.push({ manifestDigest: manifest.digest, manifestSize: manifest.raw.length, mediaType: image.mediaType, configDigest: image.configDigest, diffIds: image.layers.map((l) => l.diffId), tags: [] });
    }
    return { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.raw.length, sourceDigest: target.originalDigests?.get(image.digest) ?? image.digest };
  }

  async putIndex(): Promise<undefined> {
    return undefined;
  }

  /** A name to load the image as: kept for index.json, manifest.json and repositories. */
  async setRef(target: CopyTarget, manifests: readonly ManifestPut[]): Promise<void> {
    const ref = target.ref;
    if (ref === undefined || ref.tag === undefined) return;
    for (const m of manifests) {
      const entry = this.entries.find((e) => e.manifestDigest === m.digest)!;
      if (!entry.tags.some((t) => familiarReference(t) === familiarReference(ref))) entry.tags.push(ref);
    }
  }

  async commit(): Promise<void> {
    if (this.entries.length === 0) throw new FerryError('USAGE', 'save: no images to write');
    const writer = await this.open();
    const index: Array<Record<string, unknown>> = [];
    const manifestJson: Array<Record<string, unknown>> = [];
    const repositories: Record<string, Record<string, string>> = {};
    for (const entry of this.entries) {
      const { tags } = entry;
      // Full names: docker and containerd normalise them the same, and podman would file a short name under localhost/.
      const names = tags.map((t) => formatReference({ registry: t.registry, repository: t.repository, tag: t.tag ?? 'latest' }));
      const descriptor = { mediaType: entry.mediaType, digest: entry.manifestDigest, size: entry.manifestSize };
      if (tags.length === 0) index.push(descriptor);
      for (const [i, tag] of tags.entries()) {
        index.push({ ...descriptor, annotations: { 'io.containerd.image.name': names[i]!, 'org.opencontainers.image.ref.name': tag.tag ?? 'latest' } });
      }
      manifestJson.push({ Config: blobName(entry.configDigest), RepoTags: names, Layers: entry.diffIds.map(blobName) });
      const top = entry.diffIds[entry.diffIds.length - 1];
      for (const tag of tags) {
        const repo = familiarReference({ registry: tag.registry, repository: tag.repository });
        if (top !== undefined) (repositories[repo] ??= {})[tag.tag ?? 'latest'] = digestHex(top);
      }
    }
    await this.wrap(async () => {
      await writer.file('index.json', layoutIndex(index));
      await writer.file('manifest.json', Buffer.from(JSON.stringify(manifestJson)));
      await writer.file('repositories', Buffer.from(JSON.stringify(repositories)));
      await writer.end();
      if (this.file !== undefined && typeof this.output === 'string') {
        const file = this.file;
        this.file = undefined;
        await file.commit(this.output);
      }
    });
  }

  /** The file appears only when complete: the temp file goes. */
  async abort(): Promise<void> {
    const file = this.file;
    this.file = undefined;
    await file?.abort();
  }

  /** I/O failures name the archive; ferry's own errors and aborts pass as they are. */
  private async wrap<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof FerryError || (err instanceof Error && err.name === 'AbortError')) throw err;
      throw new FerryError('IO_ERROR', `write ${this.name}: ${messageOf(err)}`, { cause: err });
    }
  }
}
