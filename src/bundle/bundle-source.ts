import { closeSync, createReadStream, createWriteStream, openSync, readSync, writeSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import type { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Image, IndexInfo, Layer } from '../oci/image.js';
import { MAX_MANIFEST_BYTES, parseImageConfig, parseManifest, type ImageConfig, type ImageManifest } from '../oci/manifest.js';
import { platformMatches, type Platform } from '../oci/platform.js';
import { parseReference, type Reference } from '../oci/reference.js';
import { keptBytes } from '../io/kept-bytes.js';
import { chain, decompressLayer } from '../io/layer-forms.js';
import { tee } from '../io/tee.js';
import { ioError } from '../io/atomic-file.js';
import { VerifyDigest } from '../io/verify-digest.js';
import type { BundleHeader, BundleImage, BundleImageLayer } from './format.js';
import { openBundleStream, type BundleBlobEvent, type BundleInput } from './read-bundle.js';

/**
 * A bundle read as a location: its images as `Image`s, in one pass. Manifests and configs come
 * first in the stream and are kept; each layer's bytes are handed to whoever opens that layer
 * when the stream reaches it. A layer wanted later than it passes (a copy that stacks layers in
 * another order, or a blob two layer stacks use) is spooled to a file as it passes and read from
 * there; one that nobody wants is skipped unread. `order` tells the copy where each layer's bytes
 * pass, so it can ask for them in stream order.
 */
export interface BundleSourceOptions {
  publicKey?: KeyObject | string;
  /** Only images of these platforms (default: every image in the bundle). */
  platforms?: Platform[];
  signal?: AbortSignal;
  /**
   * A file (created, removed at close) to keep the images' manifests and configs in instead of
   * memory: a copy holds every image's two until its end, 1-2 MB at a thousand images.
   */
  documents?: string;
}

export interface BundleTarget {
  ref: Reference;
  images: Image[];
  index?: IndexInfo;
}

export interface OpenedBundle {
  readonly header: BundleHeader;
  /** The chosen images, one target per image (name and platform), in the header's order. */
  readonly targets: BundleTarget[];
  /** The header's entry of each chosen image. */
  readonly entries: ReadonlyMap<Image, BundleImage>;
  /** Where layer `index` of `image` passes in the stream (for copies that take layers in order). */
  order(image: Image, index: number): number;
  /**
   * Before the copy: how many times each layer blob will be opened (a copy that already has a
   * layer never opens it). Blobs not listed pass unread; a blob opened more often is spooled.
   */
  expect(uses: ReadonlyMap<Digest, number>, spoolPath: (digest: Digest) => string, options?: { keep?: boolean; destination?: string }): void;
  /** After the copy: reads the rest of the stream, so a damaged or truncated bundle fails before any name is set. */
  finish(): Promise<void>;
  /** Ends the pass and removes spool files. */
  close(): Promise<void>;
}

async function readSmall(event: BundleBlobEvent, what: string): Promise<Buffer> {
  if (event.size > MAX_MANIFEST_BYTES) throw new FerryError('INVALID_MANIFEST', `${what}: over ${MAX_MANIFEST_BYTES} bytes`);
  return event.bytes(MAX_MANIFEST_BYTES);
}

interface Waiter {
  resolve: (stream: Readable) => void;
  reject: (err: unknown) => void;
}

/** The rendezvous between the one-pass stream and the layers that open it. */
class Passage {
  private readonly waiting = new Map<string, Waiter[]>();
  private readonly spooled = new Map<string, string>();
  private readonly spooling = new Map<string, Promise<void>>();
  private readonly failed = new Map<string, unknown>();
  private readonly passed = new Set<string>();
  private uses = new Map<string, number>();
  private spoolPath: ((digest: Digest) => string) | undefined;
  /** Every wanted blob spooled as it passes and read from there, as often as it is opened (uploads retried, several repositories). */
  private keep = false;
  private destination = 'the destination';
  private pumping: Promise<void> | undefined;
  private ended = false;

  constructor(
    private readonly events: AsyncGenerator<BundleBlobEvent>,
    private current: BundleBlobEvent | undefined,
    /** Where each blob of the bundle passes in the stream. */
    private readonly positions: ReadonlyMap<string, number>,
    private readonly name: string,
  ) {}

  expect(uses: ReadonlyMap<Digest, number>, spoolPath: (digest: Digest) => string, options: { keep?: boolean; destination?: string } = {}): void {
    this.uses = new Map(uses);
    this.spoolPath = spoolPath;
    this.keep = options.keep ?? false;
    this.destination = options.destination ?? 'the destination';
  }

  async open(digest: Digest, what: string): Promise<Readable> {
    const failure = this.failed.get(digest);
    if (failure !== undefined) throw failure;
    await this.spooling.get(digest);
    const spool = this.spooled.get(digest);
    if (spool !== undefined) {
      if (!this.keep) this.take(digest);
      return createReadStream(spool);
    }
    if (!this.positions.has(digest)) {
      throw new FerryError('NOT_FOUND', `${what}: blob ${digest} is not in this delta bundle and not in ${this.destination}`, {
        hint: 'copy the bundle this delta was made against there first, or export a full bundle',
      });
    }
    if (this.passed.has(digest)) {
      throw new FerryError('BUNDLE_INVALID', `${this.name}: ${what}: blob ${digest} was wanted again after it passed`, { hint: 'this is a bug in ferry: report it' });
    }
    const stream = new Promise<Readable>((resolve, reject) => {
      const list = this.waiting.get(digest) ?? [];
      list.push({ resolve, reject });
      this.waiting.set(digest, list);
    });
    this.pumping ??= this.pump().finally(() => (this.pumping = undefined));
    return stream;
  }

  private take(digest: string): number {
    const left = (this.uses.get(digest) ?? 1) - 1;
    this.uses.set(digest, left);
    return left;
  }

  /** Move the stream on while someone waits: hand over, spool or skip each blob that passes. */
  private async pump(): Promise<void> {
    try {
      while (this.waiting.size > 0) {
        const event = this.current ?? (await this.next());
        this.current = undefined;
        if (event === undefined) {
          const [digest] = this.waiting.keys();
          throw new FerryError('BUNDLE_INVALID', `${this.name}: blob ${String(digest)} never arrived`);
        }
        this.passed.add(event.digest);
        const waiters = this.waiting.get(event.digest);
        if (this.keep) {
          if (waiters === undefined && !this.uses.has(event.digest)) continue; // not wanted: skipped unread
          this.waiting.delete(event.digest);
          try {
            await this.spool(event.digest, event.stream);
          } catch (err) {
            for (const w of waiters ?? []) w.reject(err);
            throw err;
          }
          for (const w of waiters ?? []) w.resolve(createReadStream(this.spooled.get(event.digest)!));
          continue;
        }
        const left = waiters === undefined ? (this.uses.get(event.digest) ?? 0) : this.take(event.digest);
        if (waiters !== undefined) {
          this.waiting.delete(event.digest);
          const [first, ...others] = waiters;
          if (left > 0 || others.length > 0) {
            // Wanted again later: one read feeds the opener and a spool file.
            const [now, later] = tee(event.stream);
            const spooled = this.spool(event.digest, later);
            first!.resolve(now);
            await Promise.all([finished(now).catch(() => undefined), spooled]);
            for (const w of others) w.resolve(createReadStream(this.spooled.get(event.digest)!));
          } else {
            first!.resolve(event.stream);
            await finished(event.stream).catch((err: unknown) => {
              this.failed.set(event.digest, err);
            });
          }
        } else if (left > 0 && this.spoolPath !== undefined) {
          await this.spool(event.digest, event.stream);
        }
        // Else left untouched: the reader skips it.
      }
    } catch (err) {
      for (const list of this.waiting.values()) for (const w of list) w.reject(err);
      this.waiting.clear();
      throw err;
    }
  }

  private async spool(digest: Digest, stream: Readable): Promise<void> {
    const path = this.spoolPath!(digest);
    const job = pipeline(stream, createWriteStream(path, { flags: 'wx', mode: 0o600 })).then(
      () => void this.spooled.set(digest, path),
      (err: unknown) => {
        this.failed.set(digest, err);
        throw err;
      },
    );
    this.spooling.set(digest, job);
    try {
      await job;
    } finally {
      this.spooling.delete(digest);
    }
  }

  private async next(): Promise<BundleBlobEvent | undefined> {
    if (this.ended) return undefined;
    const r = await this.events.next();
    if (r.done === true) {
      this.ended = true;
      return undefined;
    }
    return r.value;
  }

  /** Read what is left: the reader checks every blob it was told of arrived, and the bundle's end. */
  async finish(): Promise<void> {
    await this.pumping;
    if (this.current !== undefined) this.current = undefined;
    while ((await this.next()) !== undefined);
  }

  async close(): Promise<void> {
    try {
      await this.pumping?.catch(() => undefined);
      if (!this.ended) await this.events.return(undefined);
    } finally {
      for (const path of this.spooled.values()) await rm(path, { force: true });
    }
  }
}

/**
 * An image of the bundle, held for the whole copy while the stream passes (every image's layer 0,
 * then every layer 1, ...): so it keeps only its header entry and where its two small documents
 * are (see Documents). Its parsed manifest and config and its layers are made again when asked
 * for (each is read a few times per copy), not held: at a thousand images they were most of an
 * import's memory.
 */
class BundleImageView implements Image {
  readonly ref: Reference;

  constructor(
    private readonly entry: BundleImage,
    private readonly documents: Documents,
    private readonly passage: Passage,
    /** The bundle, as errors name it. */
    private readonly bundle: string,
  ) {
    this.ref = parseReference(entry.ref);
  }

  get rawManifest(): Buffer {
    return this.documents.get('manifest', this.entry.manifestDigest);
  }

  get rawConfig(): Buffer {
    return this.documents.get('config', this.entry.configDigest);
  }

  get digest(): Digest {
    return this.entry.manifestDigest;
  }

  get mediaType(): string {
    return this.entry.manifestMediaType;
  }

  get configDigest(): Digest {
    return this.entry.configDigest;
  }

  get platform(): Platform {
    return this.entry.platform;
  }

  get manifest(): ImageManifest {
    const parsed = parseManifest(this.rawManifest, this.entry.manifestMediaType, `manifest of ${this.entry.ref}`, 'none');
    if (parsed.kind !== 'image') throw new FerryError('BUNDLE_INVALID', `${this.bundle}: ${this.entry.ref}: ${this.entry.manifestDigest} is not an image manifest`);
    return parsed.manifest;
  }

  get config(): ImageConfig {
    return parseImageConfig(this.rawConfig, `config of ${this.entry.ref}`, 'none');
  }

  get layers(): Layer[] {
    return this.entry.layers.map((l, i) => bundleLayer(this.entry.ref, l, i, this.passage));
  }
}

function bundleLayer(ref: string, l: BundleImageLayer, i: number, passage: Passage): Layer {
  const what = (): string => `${ref} layer ${i} (${l.digest})`;
  const descriptor = { mediaType: l.mediaType, digest: l.digest, size: l.size };
  // The stream verifies each blob against its digest while it flows: a raw blob is named by its diffId.
  const open = (): Promise<Readable> => passage.open(l.blob, what());
  const base = { descriptor, diffId: l.diffId, ...(l.tarSize === undefined ? {} : { tarSize: l.tarSize }) };
  if (l.blob !== l.digest) {
    return {
      ...base,
      stored: 'tar',
      tar: open,
      blob: () => Promise.reject(new FerryError('NOT_FOUND', `${what()}: the bundle holds only the uncompressed layer ${l.diffId}`)),
    };
  }
  return {
    ...base,
    stored: 'blob',
    blob: open,
    tar: async () => chain(decompressLayer(await open(), l.mediaType, what(), l.size), new VerifyDigest(l.diffId, { what: `${what()} (diffId ${l.diffId})` })),
  };
}

type DocumentKind = 'manifest' | 'config';

/**
 * The manifests and configs read at the open, by kind and digest: in memory (copied into the kept
 * documents' slabs), or in a file of their own (written once as they pass, each read back by
 * position when asked for).
 */
class Documents {
  /** The bytes, or their offset and length in the file. */
  private readonly byKind: Record<DocumentKind, Map<string, Buffer | [number, number]>> = { manifest: new Map(), config: new Map() };
  private fd: number | undefined;
  private end = 0;

  constructor(private readonly path: string | undefined) {
    try {
      if (path !== undefined) this.fd = openSync(path, 'wx+', 0o600);
    } catch (err) {
      throw ioError(`create ${path}`, err);
    }
  }

  put(kind: DocumentKind, digest: string, bytes: Buffer): void {
    if (this.fd === undefined) {
      this.byKind[kind].set(digest, keptBytes(bytes));
      return;
    }
    try {
      for (let done = 0; done < bytes.length; ) done += writeSync(this.fd, bytes, done, bytes.length - done, this.end + done);
    } catch (err) {
      throw ioError(`keep ${kind} ${digest} in ${this.path}`, err);
    }
    this.byKind[kind].set(digest, [this.end, bytes.length]);
    this.end += bytes.length;
  }

  has(kind: DocumentKind, digest: string): boolean {
    return this.byKind[kind].has(digest);
  }

  /** A document put before (callers check `has` first). */
  get(kind: DocumentKind, digest: string): Buffer {
    const where = this.byKind[kind].get(digest)!;
    if (Buffer.isBuffer(where)) return where;
    if (this.fd === undefined) throw new FerryError('BUNDLE_INVALID', `${this.path}: ${kind} ${digest} was read after the bundle was closed`, { hint: 'this is a bug in ferry: report it' });
    const [offset, length] = where;
    // Memory of its own, not a piece of Node's shared pool that a caller keeping it would pin.
    const bytes = Buffer.allocUnsafeSlow(length);
    for (let done = 0; done < length; ) {
      const n = readSync(this.fd, bytes, done, length - done, offset + done);
      if (n === 0) throw new FerryError('IO_ERROR', `${this.path}: shorter than the documents written to it`, { hint: "something else changed the store's tmp/ during the import: run it again" });
      done += n;
    }
    return bytes;
  }

  async close(): Promise<void> {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
    await rm(this.path!, { force: true });
  }
}

/** The image of a header entry: its manifest and config checked now, before anything is copied. */
function imageOf(entry: BundleImage, documents: Documents, passage: Passage, name: string): Image {
  const missing = !documents.has('manifest', entry.manifestDigest) ? `manifest ${entry.manifestDigest}` : !documents.has('config', entry.configDigest) ? `config ${entry.configDigest}` : undefined;
  if (missing !== undefined) throw new FerryError('BUNDLE_INVALID', `${name}: ${entry.ref}: its ${missing} is not in the bundle`);
  const image = new BundleImageView(entry, documents, passage, name);
  // Parsed once here, so that a bad one fails the open, not the copy halfway.
  void image.manifest;
  void image.config;
  return image;
}

/** Open a bundle (path, volumes, or a stream) as a source: reads its header, manifests and configs. */
export async function openBundleSource(input: BundleInput, options: BundleSourceOptions = {}): Promise<OpenedBundle> {
  const events = openBundleStream(input, { ...(options.publicKey ? { publicKey: options.publicKey } : {}), ...(options.signal ? { signal: options.signal } : {}) });
  const name = typeof input === 'string' ? `bundle ${input}` : 'bundle stream';
  const first = await events.next();
  if (first.done === true || first.value.type !== 'header') throw new FerryError('BUNDLE_INVALID', `${name}: no header`);
  const header = first.value.header;
  const chosen = header.images.filter((i) => options.platforms === undefined || options.platforms.some((p) => platformMatches(p, i.platform)));
  if (chosen.length === 0) {
    await events.return(undefined);
    throw new FerryError('PLATFORM_NOT_FOUND', `bundle holds no image for ${options.platforms?.map((p) => `${p.os}/${p.architecture}`).join(', ')}`);
  }
  // Manifests and configs come first: keep them until the first layer.
  const blobs = (async function* (): AsyncGenerator<BundleBlobEvent> {
    for await (const event of events) if (event.type === 'blob') yield event;
  })();
  const documents = new Documents(options.documents);
  try {
    let current: BundleBlobEvent | undefined;
    for (;;) {
      const r = await blobs.next();
      if (r.done === true) break;
      const event = r.value;
      if (event.kind === 'layer') {
        current = event;
        break;
      }
      // Rewritten manifests serve only the bundle's own OCI layout: left unread.
      if (event.kind === 'config') documents.put('config', event.digest, await readSmall(event, `config ${event.digest}`));
      else if (event.encoding !== 'rewritten') documents.put('manifest', event.digest, await readSmall(event, `manifest ${event.digest}`));
    }
    const positions = new Map<string, number>();
    header.blobs.forEach((b, i) => positions.set(b.digest, i));
    const passage = new Passage(blobs, current, positions, name);
    const entries = new Map<Image, BundleImage>();
    const targets: BundleTarget[] = chosen.map((entry) => {
      const image = imageOf(entry, documents, passage, name);
      entries.set(image, entry);
      if (entry.index === undefined || !documents.has('manifest', entry.index.digest)) return { ref: image.ref!, images: [image] };
      // Held as bytes, in either mode: an index is rare, and IndexInfo's bytes are a plain field.
      return { ref: image.ref!, images: [image], index: { digest: entry.index.digest, mediaType: entry.index.mediaType, raw: documents.get('manifest', entry.index.digest) } };
    });
    return {
      header,
      targets,
      entries,
      order: (image, index) => positions.get(entries.get(image)?.layers[index]?.blob ?? '') ?? Number.MAX_SAFE_INTEGER,
      expect: (uses, spoolPath, keep) => passage.expect(uses, spoolPath, keep),
      finish: () => passage.finish(),
      close: async () => {
        try {
          await passage.close();
        } finally {
          await documents.close();
        }
      },
    };
  } catch (err) {
    // The first error is the one to report: these only release the file and the stream.
    await Promise.allSettled([blobs.return(undefined), documents.close()]);
    throw err;
  }
}
