import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, messageOf } from '../errors.js';
import { digestHex, digestOf, type Digest } from '../oci/digest.js';
import type { Image, Layer } from '../oci/image.js';
import { MediaType } from '../oci/media-types.js';
import { familiarReference, formatReference, type Reference } from '../oci/reference.js';
import { syncDir, tempPathFor } from '../io/atomic-file.js';
import { encodeTarHeader, padding, TAR_END } from '../io/tar-format.js';
import type { ProgressListener } from '../io/progress.js';

/**
 * Write a docker-archive as docker 25+ does, which `docker load`, `podman load` and skopeo's
 * `docker-archive:` read: an OCI layout (oci-layout, index.json, blobs/sha256/) whose manifests
 * point at uncompressed layer tars named by their diffId, plus the classic manifest.json
 * (Config, RepoTags, Layers as blobs/sha256 paths) and repositories. RepoTags are full names
 * (`docker.io/library/redis:7`): docker and containerd read them as docker writes them, and podman
 * keeps them as they are instead of filing a short name under `localhost/`. Layers shared by several
 * images are written once. The file appears only when complete (temp file, fsync, rename).
 *
 * Entry order: oci-layout, layers, configs, manifests, index.json, manifest.json, repositories:
 * a manifest names its layers' tar sizes, known once they are written.
 */
export interface SaveImage {
  image: Image;
  /** Names to load it as (`redis:7`, `registry.internal:5000/app:1`); none for an untagged image. */
  tags: readonly Reference[];
}

export interface WriteDockerArchiveOptions {
  signal?: AbortSignal;
  onProgress?: ProgressListener;
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

function fileSink(handle: FileHandle): Sink {
  const sink: Sink = {
    seekable: true,
    position: 0,
    async write(data) {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await handle.write(data, done, data.length - done, sink.position);
        done += bytesWritten;
        sink.position += bytesWritten;
      }
    },
    async writeAt(data, position) {
      await handle.write(data, 0, data.length, position);
    },
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

/** The manifest pointing at uncompressed tars (like docker 25's): layer descriptors replaced, everything else kept. */
function uncompressedManifest(image: Image, tarSizes: readonly number[]): Buffer {
  const json = JSON.parse(image.rawManifest.toString('utf8')) as Record<string, unknown>;
  const docker = image.mediaType === MediaType.dockerManifest;
  const layers = (json.layers as Array<Record<string, unknown>>).map((d, i) => {
    const { urls: _urls, ...rest } = d;
    return { ...rest, mediaType: docker ? MediaType.dockerLayer : MediaType.ociLayer, digest: image.layers[i]!.diffId, size: tarSizes[i]! };
  });
  return Buffer.from(JSON.stringify({ ...json, layers }));
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

async function writeEntries(writer: ArchiveWriter, images: readonly SaveImage[], options: WriteDockerArchiveOptions, seekable: boolean): Promise<void> {
  const { signal } = options;
  const blob = (d: Digest): string => `blobs/sha256/${digestHex(d)}`;
  await writer.file('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
  await writer.directory('blobs/');
  await writer.directory('blobs/sha256/');
  const tarSizes = new Map<string, number>();
  for (const { image } of images) {
    for (const layer of image.layers) {
      if (tarSizes.has(layer.diffId)) continue;
      const name = blob(layer.diffId);
      const known = layer.tarSize ?? (seekable ? undefined : await measure(layer, signal));
      const id = `save:${layer.diffId}`;
      const label = `save layer ${digestHex(layer.diffId).slice(0, 12)}`;
      options.onProgress?.({ kind: 'start', id, label, ...(known !== undefined ? { total: known } : {}) });
      const size = await writer.stream(name, await layer.tar(signal ? { signal } : {}), known, (n) => options.onProgress?.({ kind: 'advance', id, bytes: n }));
      options.onProgress?.({ kind: 'done', id, label, bytes: size });
      tarSizes.set(layer.diffId, size);
    }
  }
  const written = new Set<string>();
  const index: Array<Record<string, unknown>> = [];
  const manifestJson: Array<Record<string, unknown>> = [];
  const repositories: Record<string, Record<string, string>> = {};
  for (const { image, tags } of images) {
    if (!written.has(image.configDigest)) {
      await writer.file(blob(image.configDigest), image.rawConfig);
      written.add(image.configDigest);
    }
    const rawManifest = uncompressedManifest(image, image.layers.map((l) => tarSizes.get(l.diffId)!));
    const manifestDigest = digestOf(rawManifest);
    if (!written.has(manifestDigest)) {
      await writer.file(blob(manifestDigest), rawManifest);
      written.add(manifestDigest);
    }
    // Full names: docker and containerd normalise them the same, and podman would file a short name under localhost/.
    const names = tags.map((t) => formatReference({ registry: t.registry, repository: t.repository, tag: t.tag ?? 'latest' }));
    const descriptor = { mediaType: image.mediaType, digest: manifestDigest, size: rawManifest.length };
    if (tags.length === 0) index.push(descriptor);
    for (const tag of tags) {
      const full = formatReference({ registry: tag.registry, repository: tag.repository, tag: tag.tag ?? 'latest' });
      index.push({ ...descriptor, annotations: { 'io.containerd.image.name': full, 'org.opencontainers.image.ref.name': tag.tag ?? 'latest' } });
    }
    manifestJson.push({ Config: blob(image.configDigest), RepoTags: names, Layers: image.layers.map((l) => blob(l.diffId)) });
    const top = image.layers[image.layers.length - 1];
    for (const tag of tags) {
      const repo = familiarReference({ registry: tag.registry, repository: tag.repository });
      if (top !== undefined) (repositories[repo] ??= {})[tag.tag ?? 'latest'] = digestHex(top.diffId);
    }
  }
  await writer.file('index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: index })));
  await writer.file('manifest.json', Buffer.from(JSON.stringify(manifestJson)));
  await writer.file('repositories', Buffer.from(JSON.stringify(repositories)));
  await writer.end();
}

/** Write `images` as a docker-archive to a file (atomically) or to a stream (e.g. stdout). */
export async function writeDockerArchive(images: readonly SaveImage[], output: string | Writable, options: WriteDockerArchiveOptions = {}): Promise<void> {
  if (images.length === 0) throw new FerryError('USAGE', 'save: no images to write');
  const mtime = options.mtime ?? 0;
  if (typeof output !== 'string') {
    await writeEntries(new ArchiveWriter(streamSink(output), mtime), images, options, false);
    return;
  }
  const tmp = tempPathFor(output);
  let handle: FileHandle | undefined;
  try {
    handle = await open(tmp, 'wx', 0o644);
    await writeEntries(new ArchiveWriter(fileSink(handle), mtime), images, options, true);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(tmp, output);
    await syncDir(dirname(output));
  } catch (err) {
    await handle?.close();
    await rm(tmp, { force: true });
    if (err instanceof FerryError || (err instanceof Error && err.name === 'AbortError')) throw err;
    throw new FerryError('IO_ERROR', `write docker-archive ${output}: ${messageOf(err)}`, { cause: err });
  }
}
