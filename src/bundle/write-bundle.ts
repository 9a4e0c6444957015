import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, messageOf, UsageError } from '../errors.js';
import { Digester, digestOf, type Digest } from '../oci/digest.js';
import type { Image, IndexInfo } from '../oci/image.js';
import { Ingestion, tempPathFor } from '../io/atomic-file.js';
import { packedBuild } from '../io/native-parts.js';
import { encodeTarHeader, padding, TAR_END } from '../io/tar-format.js';
import { ZSTD_MAX_LEVEL, zstdCompressStream } from '../io/zstd.js';
import { HEADER_ENTRY, SIGNATURE_ENTRY, headerPieces, serializeHeader, type BlobKind, type BundleHeader, type BundleTool, type LayerEncoding } from './format.js';
import { planBundle, type BundlePlan, type PlannedEntry, type PlanSource } from './plan.js';
import { privateKeyFrom, signHeader } from './sign.js';
import { MIN_VOLUME_SIZE } from './size.js';
import { VolumeWriter, checksumPath, type VolumeInfo } from './volumes.js';

/** One image to write, under the full normalised reference it will be known by on the other side. */
export interface BundleSource {
  /** Full normalised reference text, e.g. docker.io/library/redis:7. */
  ref: string;
  image: Image;
  /**
   * The multi-platform index the image was resolved from. Its bytes travel once as a blob and
   * each image it lists records it (`images[].index`), so import and push keep the index digest.
   */
  index?: IndexInfo;
}

/** A single file, `-` (stdout), any Writable, or volumes of at most `split` bytes. */
export type BundleOutput = string | Writable | { path: string; split: number };

export interface BundleProgressEvent {
  /** `measure`: sizing a raw layer before writing; `write`: bytes of a blob going into the bundle. */
  phase: 'measure' | 'write';
  digest: Digest;
  kind: BlobKind;
  /** The image the blob was taken from (the first one that has it). */
  ref: string;
  /** Bytes of this blob done so far, and its size (0 while unknown when measuring). */
  bytes: number;
  total: number;
  done: boolean;
}

export interface WriteBundleOptions {
  layers?: LayerEncoding;
  /** zstd level, 1..22, or `max` (19: levels 20-22 buy little and need far more memory). */
  level?: number | 'max';
  /** log2 of the zstd window; above 27 plain `zstd -d`/`tar --zstd` need --long=N. Default 27. */
  windowLog?: number;
  /** zstd worker threads. Any value >= 1 gives the same bytes; 0 gives other (also deterministic) bytes. */
  workers?: number;
  /** Digests the target already has (a delta): those layers are left out and listed in `requires`. */
  exclude?: ReadonlySet<string>;
  /** ed25519 private key (KeyObject or PKCS#8 PEM text): signs ferry-bundle.json. */
  signKey?: KeyObject | string;
  /** Files carried beside the bundle (export --with-ferry): recorded in the header, listed in NAME.sha256. */
  tools?: readonly BundleTool[];
  /** The bundle's time; default SOURCE_DATE_EPOCH, else the newest image's `created`. */
  created?: Date;
  /**
   * Layers measured at once (the pass that learns raw tar sizes), under the transfer engine's one
   * limit; the bundle destination takes at most BUNDLE_MAX_MEASURE. Default 1.
   */
  jobs?: number;
  signal?: AbortSignal;
  onProgress?: (e: BundleProgressEvent) => void;
}

export interface BundleSummary {
  header: BundleHeader;
  headerDigest: Digest;
  signed: boolean;
  /** Bytes of the uncompressed tar stream, and of the compressed bundle. */
  tarBytes: number;
  bytes: number;
  /** The files written: the bundle, or the volumes then the .sha256 file; empty for a stream. */
  files: string[];
  volumes?: VolumeInfo[];
}

export const DEFAULT_LEVEL = 9;
export const MAX_LEVEL_ALIAS = 19;
export const DEFAULT_WINDOW_LOG = 27;
export const DEFAULT_WORKERS = 2;

export interface ResolvedWriteOptions {
  layers: LayerEncoding;
  level: number;
  windowLog: number;
  workers: number;
}

/** Check the options (and the output's volume size) before any work (a bad level must not cost a pull): throws UsageError. */
export function checkWriteOptions(options: WriteBundleOptions, output?: BundleOutput): void {
  resolveOptions(options);
  if (output !== undefined) checkOutput(output);
  if (options.signKey !== undefined) privateKeyFrom(options.signKey);
}

export function resolveOptions(options: WriteBundleOptions): ResolvedWriteOptions {
  const layers = options.layers ?? 'raw';
  if (layers !== 'raw' && layers !== 'as-pulled') throw new UsageError(`invalid layer encoding "${String(layers)}": use raw or as-pulled`);
  const level = options.level === 'max' ? MAX_LEVEL_ALIAS : options.level ?? DEFAULT_LEVEL;
  if (!Number.isInteger(level) || level < 1 || level > ZSTD_MAX_LEVEL) {
    throw new UsageError(`invalid compression level ${String(options.level)}: use 1..${ZSTD_MAX_LEVEL} or max`);
  }
  const windowLog = options.windowLog ?? DEFAULT_WINDOW_LOG;
  if (!Number.isInteger(windowLog) || windowLog < 10 || windowLog > 31) {
    throw new UsageError(`invalid window log ${String(options.windowLog)}: use 10..31 (27 = 128 MiB, what plain zstd reads)`);
  }
  const workers = options.workers ?? DEFAULT_WORKERS;
  if (!Number.isInteger(workers) || workers < 0 || workers > 64) throw new UsageError(`invalid worker count ${String(options.workers)}`);
  if (options.jobs !== undefined && (!Number.isInteger(options.jobs) || options.jobs < 1)) {
    throw new UsageError(`invalid job count ${String(options.jobs)}: expected a whole number of at least 1`);
  }
  return { layers, level, windowLog, workers };
}

/**
 * Below this window a job of the window's size is never larger than zstd's own: with long
 * matching zstd's jobs are at least 2 MiB (2^21), 16 MiB at level 9.
 */
const SMALL_WINDOW_LOG = 22;
/** zstd's smallest useful job (ZSTDMT_JOBSIZE_MIN is 512 KiB; 1 MiB keeps its per-job overhead small). */
const MIN_JOB_SIZE = 1 << 20;

/**
 * A small window is how a user bounds export's memory, so the compressor's jobs follow it. With
 * long matching zstd sizes a job from the match search, not the window, and keeps (workers + 3)
 * jobs of input buffered once the stream is long enough to fill them: 80 MiB at --window-log 20
 * on two workers, which only a long stream (many images) ever touches. Window-sized jobs (1 MiB
 * at least) keep that to a few MiB. At the default window zstd's jobs are smaller than the window
 * it must hold anyway, and stay zstd's, so the bundle bytes stay those of `zstd -T2 -9 --long=27`.
 */
function compressorJobSize(resolved: ResolvedWriteOptions): { jobSize?: number } {
  if (resolved.workers === 0 || resolved.windowLog >= SMALL_WINDOW_LOG) return {};
  return { jobSize: Math.max(MIN_JOB_SIZE, 2 ** resolved.windowLog) };
}

/**
 * The bundle's time, fixed so that the same images give the same bytes: the caller's, else
 * SOURCE_DATE_EPOCH (reproducible-builds.org), else the newest image's `created`, else the epoch.
 */
export function bundleTime(sources: readonly BundleSource[], created?: Date): Date {
  if (created !== undefined) return created;
  const epoch = process.env.SOURCE_DATE_EPOCH;
  if (epoch !== undefined && epoch.trim() !== '') {
    const seconds = Number(epoch);
    if (!Number.isSafeInteger(seconds) || seconds < 0) throw new FerryError('USAGE', `SOURCE_DATE_EPOCH="${epoch}" is not a number of seconds`);
    return new Date(seconds * 1000);
  }
  let newest = 0;
  for (const { image } of sources) {
    const t = image.config.created === undefined ? Number.NaN : Date.parse(image.config.created);
    if (Number.isFinite(t) && t > newest) newest = t;
  }
  return new Date(Math.floor(newest / 1000) * 1000);
}

let cachedVersion: string | undefined;

/** ferry's version, from its package.json (two levels up from src/bundle or dist/bundle). */
export async function ferryVersion(): Promise<string> {
  if (cachedVersion !== undefined) return cachedVersion;
  // The packed executable has no package.json beside it: it carries the version.
  const packed = packedBuild();
  if (packed !== undefined) return (cachedVersion = packed.ferryVersion);
  const text = await readFile(new URL('../../package.json', import.meta.url), 'utf8');
  const version = (JSON.parse(text) as { version?: unknown }).version;
  cachedVersion = typeof version === 'string' ? version : '0.0.0';
  return cachedVersion;
}

/** A bundle entry's header: only files and directories, root-owned, 0644 and 0755, one mtime. */
export function bundleEntryHeader(name: string, type: 'file' | 'directory', size: number, mtime: number): Buffer {
  if (!Number.isSafeInteger(size) || size < 0) throw new FerryError('BUNDLE_INVALID', `tar entry ${name}: invalid size ${size}`);
  const directory = type === 'directory';
  return encodeTarHeader({ name, typeflag: directory ? '5' : '0', mode: directory ? 0o755 : 0o644, size, mtime });
}

function fileEntry(name: string, bytes: Buffer, mtime: number): Buffer[] {
  return [bundleEntryHeader(name, 'file', bytes.length, mtime), bytes, padding(bytes.length)];
}

/**
 * The header as the stream writes it: its size, digest and signature, from a pass over its pieces.
 * The stream makes the pieces again, so the whole header (2.5 KB per image) is not held as the
 * compressor starts, except to sign it: ed25519 signs a message whole.
 */
interface WrittenHeader {
  size: number;
  digest: Digest;
  signature: Buffer | undefined;
}

function measureHeader(header: BundleHeader, key: KeyObject | undefined): WrittenHeader {
  if (key !== undefined) {
    // The header's defining serialization; the stream's pieces are checked against its digest.
    const bytes = serializeHeader(header);
    return { size: bytes.length, digest: digestOf(bytes), signature: signHeader(bytes, key) };
  }
  const digester = new Digester();
  for (const piece of headerPieces(header)) digester.update(piece);
  return { size: digester.size, digest: digester.digest(), signature: undefined };
}

/** The uncompressed tar stream of a plan, produced as zstd asks for it (backpressure). */
async function* tarStream(plan: BundlePlan, header: WrittenHeader, options: WriteBundleOptions): AsyncGenerator<Buffer> {
  const { mtime } = plan;
  yield bundleEntryHeader(HEADER_ENTRY, 'file', header.size, mtime);
  // Made again from the same header: checked against the first pass, which the signature covers.
  const digester = new Digester();
  for (const piece of headerPieces(plan.header)) {
    digester.update(piece);
    yield piece;
  }
  if (digester.size !== header.size || digester.digest() !== header.digest) {
    throw new FerryError('DIGEST_MISMATCH', `write bundle: ${HEADER_ENTRY} changed while it was written (${header.digest} became ${digester.digest()})`, {
      hint: 'the plan changed under the writer, a fault in ferry: report it with the command that was run',
    });
  }
  yield padding(header.size);
  if (header.signature !== undefined) yield* fileEntry(SIGNATURE_ENTRY, header.signature, mtime);
  for (const entry of plan.entries) yield* entryChunks(entry, mtime, options);
  yield TAR_END;
}

async function* entryChunks(entry: PlannedEntry, mtime: number, options: WriteBundleOptions): AsyncGenerator<Buffer> {
  if (entry.type === 'directory') {
    yield bundleEntryHeader(entry.name, 'directory', 0, mtime);
    return;
  }
  const { content } = entry;
  if (content.kind === 'bytes') {
    yield* fileEntry(entry.name, content.bytes, mtime);
    return;
  }
  const digest = entry.digest!;
  const kind = entry.blobKind ?? 'layer';
  yield bundleEntryHeader(entry.name, 'file', entry.size, mtime);
  const open = options.signal === undefined ? {} : { signal: options.signal };
  // Layer.tar()/blob() verify diffId/digest as they stream; the size must match the tar header exactly.
  const stream = content.form === 'tar' ? await content.layer.tar(open) : await content.layer.blob(open);
  let bytes = 0;
  try {
    for await (const chunk of stream) {
      const b = chunk as Buffer;
      bytes += b.length;
      if (bytes > entry.size) break;
      options.onProgress?.({ phase: 'write', digest, kind, ref: content.ref, bytes, total: entry.size, done: false });
      yield b;
    }
  } finally {
    stream.destroy();
  }
  if (bytes !== entry.size) {
    const got = bytes > entry.size ? `more than ${entry.size}` : String(bytes);
    throw new FerryError('SIZE_MISMATCH', `write bundle: ${content.form === 'tar' ? 'layer' : 'blob'} ${digest} of ${content.ref}: got ${got} bytes, expected ${entry.size}`, {
      hint: 'the source changed while the bundle was written, or states a wrong size; export again',
    });
  }
  options.onProgress?.({ phase: 'write', digest, kind, ref: content.ref, bytes, total: entry.size, done: true });
  yield padding(entry.size);
}

class CountBytes extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    done(null, chunk);
  }
}

interface Sink {
  stream: Writable;
  end: boolean;
  commit(): Promise<{ files: string[]; volumes?: VolumeInfo[] }>;
  abort(): Promise<void>;
}

/**
 * Destroy a stream and wait until it has closed: a file still opening, or temp volumes still
 * being removed, must be gone before the caller hears of the failure. Only 'close' is awaited:
 * the error that got us here is already being reported.
 */
async function destroyAndWait(stream: Writable): Promise<void> {
  if (stream.closed) return;
  const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
  stream.destroy();
  await closed;
}

/**
 * The bundle file as a Writable: an io Ingestion at a temp name beside `target`, opened as the
 * stream constructs (an open error fails the pipeline like any write error); commit() then puts
 * it in place (fsync, rename, fsync dir). Destroyed before it finished, its temp file goes, once
 * the file has opened if it was still opening; a finished one waits for commit() or abort().
 */
class FileSink extends Writable {
  private file: Ingestion | undefined;

  constructor(private readonly target: string) {
    super();
  }

  override _construct(done: (err?: Error | null) => void): void {
    Ingestion.open(tempPathFor(this.target), 0o644).then(
      (file) => {
        this.file = file;
        done();
      },
      (err: Error) => done(err),
    );
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.file!.write(chunk).then(() => done(), done);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, done: (err?: Error | null) => void): void {
    this.file!.write(Buffer.concat(chunks.map((c) => c.chunk))).then(() => done(), done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    // autoDestroy runs this after 'finish' too: a finished file is kept for commit().
    if (this.file === undefined || this.writableFinished) {
      done(err);
      return;
    }
    this.file.abort().then(
      () => done(err),
      (e: unknown) => done(err ?? (e as Error)),
    );
  }

  /** Put the finished file at its target. On failure the temp file is gone. */
  async commit(): Promise<void> {
    if (this.file === undefined || !this.writableFinished) throw new Error(`bundle ${this.target}: commit before the file was finished`);
    await this.file.commit(this.target);
  }

  /** Nothing of the file is left: the stream is closed (its file opened, if it was opening) and the temp file removed. */
  async abort(): Promise<void> {
    await destroyAndWait(this);
    await this.file?.abort();
  }
}

async function openSink(output: BundleOutput, tools: readonly BundleTool[]): Promise<Sink> {
  if (output === '-') {
    return { stream: process.stdout, end: false, commit: async () => ({ files: [] }), abort: async () => undefined };
  }
  if (output instanceof Writable) {
    return { stream: output, end: true, commit: async () => ({ files: [] }), abort: async () => undefined };
  }
  if (typeof output === 'string') {
    const file = new FileSink(output);
    return {
      stream: file,
      end: true,
      async commit() {
        await file.commit();
        return { files: [output] };
      },
      abort: () => file.abort(),
    };
  }
  const volumes = new VolumeWriter(output.path, output.split, tools);
  return {
    stream: volumes,
    end: true,
    commit: async () => ({ files: [...volumes.volumes.map((v) => v.path), checksumPath(output.path)], volumes: volumes.volumes }),
    abort: () => destroyAndWait(volumes),
  };
}

/** The output as messages name it. */
export function outputName(output: BundleOutput): string {
  if (output === '-') return 'stdout';
  if (typeof output === 'string') return output;
  if (output instanceof Writable) return 'output stream';
  return `${output.path}.001...`;
}

/** A volume size is checked with the other options, before any work. */
export function checkOutput(output: BundleOutput): void {
  if (typeof output === 'object' && !(output instanceof Writable) && (!Number.isSafeInteger(output.split) || output.split < MIN_VOLUME_SIZE)) {
    throw new UsageError(`invalid volume size ${output.split}: volumes must be at least ${MIN_VOLUME_SIZE} bytes (1M)`);
  }
}

/** The plan of these images, their raw layers' tar sizes known (Layer.tarSize, the delta's, or measured). */
export async function planWith(sources: readonly PlanSource[], tarSizes: ReadonlyMap<Digest, number>, options: WriteBundleOptions): Promise<BundlePlan> {
  const resolved = resolveOptions(options);
  return planBundle(sources, {
    layers: resolved.layers,
    level: resolved.level,
    windowLog: resolved.windowLog,
    exclude: options.exclude ?? new Set<string>(),
    created: bundleTime(sources, options.created),
    ferryVersion: await ferryVersion(),
    tarSizes: resolved.layers === 'raw' ? tarSizes : new Map<Digest, number>(),
    ...(options.tools === undefined ? {} : { tools: options.tools }),
  });
}

/**
 * Stream a planned bundle through one zstd compressor into the output, in constant memory
 * whatever the layer sizes. A file output appears atomically, and only when complete; on a
 * failure nothing of it is left.
 */
export async function writePlannedBundle(plan: BundlePlan, output: BundleOutput, options: WriteBundleOptions): Promise<BundleSummary> {
  const resolved = resolveOptions(options);
  checkOutput(output);
  const key = options.signKey === undefined ? undefined : privateKeyFrom(options.signKey);
  const header = measureHeader(plan.header, key);
  const sink = await openSink(output, options.tools ?? []);
  const tarCount = new CountBytes();
  const count = new CountBytes();
  const compressor = zstdCompressStream({
    level: resolved.level,
    windowLog: resolved.windowLog,
    long: true,
    workers: resolved.workers,
    ...compressorJobSize(resolved),
  });
  try {
    await pipeline(tarStream(plan, header, options), tarCount, compressor, count, sink.stream, {
      end: sink.end,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  } catch (err) {
    await sink.abort();
    if (err instanceof FerryError) throw err;
    if ((err as Error).name === 'AbortError') throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new FerryError(code === 'ENOSPC' ? 'NO_SPACE' : 'IO_ERROR', `write bundle ${outputName(output)}: ${messageOf(err)}`, { cause: err });
  }
  let committed: { files: string[]; volumes?: VolumeInfo[] };
  try {
    committed = await sink.commit();
  } catch (err) {
    await sink.abort();
    throw err instanceof FerryError ? err : new FerryError('IO_ERROR', `write bundle ${outputName(output)}: ${messageOf(err)}`, { cause: err });
  }
  const summary: BundleSummary = {
    header: plan.header,
    headerDigest: header.digest,
    signed: header.signature !== undefined,
    tarBytes: tarCount.bytes,
    bytes: count.bytes,
    files: committed.files,
  };
  if (committed.volumes !== undefined) summary.volumes = committed.volumes;
  return summary;
}
