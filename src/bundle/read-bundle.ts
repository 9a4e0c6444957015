import type { KeyObject } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { FerryError, isFerryError, messageOf } from '../errors.js';
import { Digester, digestAlgorithm, digestOf, type Digest } from '../oci/digest.js';
import { chain } from '../io/layer-forms.js';
import { markVerified } from '../io/verify-digest.js';
import { ZSTD_FRAME_HEADER_MAX, ZSTD_MAGIC, ZSTD_WINDOW_LOG_LIMIT, ZSTD_WINDOW_LOG_MAX, zstdDecompressStream, zstdDecompressStreamOnThread, zstdFrameWindowLog } from '../io/zstd.js';
import {
  HEADER_ENTRY,
  INDEX_ENTRY,
  MAX_HEADER_BYTES,
  MAX_SIGNATURE_BYTES,
  OCI_LAYOUT_ENTRY,
  SIGNATURE_ENTRY,
  digestOfEntryName,
  parseHeader,
  type BlobEncoding,
  type BlobKind,
  type BundleBlob,
  type BundleHeader,
} from './format.js';
import { publicKeyFrom, verifyHeaderSignature } from './sign.js';
import { BundleTarReader, LazyReadable, type TarEntry } from './tar-reader.js';
import {
  damagedVolumeError,
  damagedVolumes,
  locateBundle,
  locationName,
  openLocationStream,
  type BundleLocation,
  type VolumeInfo,
} from './volumes.js';

/**
 * The bundle reader: one pass over one stream (a file, volumes, or stdin), so import and push
 * read a bundle once. It yields the header first (signature checked before anything else when a
 * key is given), then each blob as a stream verified against its digest while it flows.
 */

export type BundleInput = string | Readable;

export interface OpenBundleOptions {
  /** With a key, unsigned or wrongly signed bundles are refused before any blob is yielded. */
  publicKey?: KeyObject | string;
  signal?: AbortSignal;
  /** Sees the small layout entries (oci-layout, index.json) as they pass; used by verify. */
  onLayoutEntry?: (name: string, bytes: Buffer) => void;
}

export interface BundleHeaderEvent {
  type: 'header';
  header: BundleHeader;
  /** The exact bytes of ferry-bundle.json (what the signature covers). */
  headerBytes: Buffer;
  signature: Buffer | undefined;
  /** True when a public key was given and the signature matched. */
  signatureVerified: boolean;
  /** Where the bytes come from: undefined for a stream. */
  location: BundleLocation | undefined;
}

export interface BundleBlobEvent {
  type: 'blob';
  digest: Digest;
  size: number;
  mediaType: string;
  kind: BlobKind;
  encoding: BlobEncoding;
  /**
   * The blob's bytes, verified while streaming: the stream errors at its end on a digest
   * mismatch. Read it to its end (or leave it untouched: it is then skipped) before asking for
   * the next event. Made when first asked for.
   */
  readonly stream: Readable;
  /**
   * The whole blob at once, verified, for the small ones (manifests, configs): without the
   * stream's objects, which a bundle of thousands of images made and dropped by the thousand.
   * Throws BUNDLE_INVALID past `max` bytes. Either this or `stream`, not both. May be a view of a
   * decoded block, which a kept one would pin: whoever keeps it copies it (keptBytes).
   */
  bytes(max: number): Promise<Buffer>;
}

export type BundleEvent = BundleHeaderEvent | BundleBlobEvent;

interface Opened {
  name: string;
  location: BundleLocation | undefined;
  compressed: Readable;
  /** The volume being read (to limit the search for a damaged one to those read so far). */
  current: () => VolumeInfo | undefined;
}

async function openInput(input: BundleInput, signal: AbortSignal | undefined): Promise<Opened> {
  const none = (): undefined => undefined;
  if (typeof input !== 'string') return { name: 'bundle stream', location: undefined, compressed: input, current: none };
  if (input === '-') return { name: 'bundle on stdin', location: undefined, compressed: process.stdin, current: none };
  const location = await locateBundle(input);
  const { stream, current } = openLocationStream(location, signal === undefined ? {} : { signal });
  return { name: locationName(location), location, compressed: stream, current };
}

interface ZstdStart {
  /** The window (log2) the first frame declares. */
  windowLog: number;
  /** The whole compressed stream again, its start included. */
  chunks: AsyncIterable<Buffer>;
}

/**
 * Read the start of the stream: it must be a zstd frame, whose header declares the window the
 * decoder will have to allocate. Fails at once on anything else.
 */
async function startZstd(source: AsyncIterable<Buffer>, name: string): Promise<ZstdStart> {
  const iterator = source[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < ZSTD_FRAME_HEADER_MAX) {
    const next = await iterator.next();
    if (next.done === true) {
      ended = true;
      break;
    }
    head = Buffer.concat([head, next.value]);
  }
  if (head.length === 0) throw new FerryError('BUNDLE_INVALID', `${name}: empty file`, { hint: 'the copy is incomplete: copy it again' });
  if (head.length < ZSTD_MAGIC.length) throw new FerryError('BUNDLE_INVALID', `${name}: not a ferry bundle: too short`);
  if (!head.subarray(0, ZSTD_MAGIC.length).equals(ZSTD_MAGIC)) {
    throw new FerryError('BUNDLE_INVALID', `${name}: not a ferry bundle: it does not start with a zstd frame`, {
      hint: 'give the .tar.zst file ferry export wrote (or its first volume)',
    });
  }
  // Too short for a frame header: the decoder reports the truncation.
  const windowLog = zstdFrameWindowLog(head) ?? ZSTD_WINDOW_LOG_LIMIT;
  const first = head;
  const chunks = async function* (): AsyncGenerator<Buffer> {
    try {
      yield first;
      if (ended) return;
      for (;;) {
        const next = await iterator.next();
        if (next.done === true) return;
        yield next.value;
      }
    } finally {
      // Releases the file (or volumes) when reading stops early, as for-await would.
      await iterator.return?.();
    }
  };
  return { windowLog, chunks: chunks() };
}

/**
 * After a failure while reading volumes, name the damaged volume when the .sha256 file can:
 * that tells the user which file to copy again, instead of a decoder's complaint.
 */
async function explain(err: unknown, opened: Opened, signal: AbortSignal | undefined): Promise<unknown> {
  if (isFerryError(err, 'DIGEST_MISMATCH') && /is damaged: copy it again$/.test(err.message)) return err;
  if (signal?.aborted === true) return err;
  if (opened.location?.kind === 'volumes') {
    // The damage is in a volume read so far: the decoder fails at it, or soon after.
    const current = opened.current();
    const upTo = current === undefined ? opened.location.volumes.length : opened.location.volumes.indexOf(current) + 1;
    const bad = await damagedVolumes({ ...opened.location, volumes: opened.location.volumes.slice(0, upTo) }, signal);
    if (bad.length > 0) return damagedVolumeError(bad[0]!.path, err);
  }
  if (err instanceof FerryError) return err;
  return new FerryError('BUNDLE_INVALID', `${opened.name}: cannot read the bundle: ${messageOf(err)}`, {
    cause: err,
    hint: 'the bundle is damaged or truncated: copy it again (`ferry verify` checks volumes and blobs)',
  });
}

function checkSignature(opened: Opened, headerBytes: Buffer, signature: Buffer | undefined, key: KeyObject): void {
  if (signature === undefined) {
    throw new FerryError('SIGNATURE_INVALID', `${opened.name} is not signed: refusing it because a public key was given`, {
      hint: 'export it again with --sign KEY.pem, or drop --key to accept unsigned bundles',
    });
  }
  if (!verifyHeaderSignature(headerBytes, signature, key)) {
    throw new FerryError('SIGNATURE_INVALID', `${opened.name}: the signature does not match ${HEADER_ENTRY}: refusing it`, {
      hint: 'the bundle was altered after signing, or signed with another key: get it again from its source, and check you have the right public key',
    });
  }
}

/**
 * Open a bundle for one streaming pass: a path (file, volume base name or any volume), `-` for
 * stdin, or a Readable of the compressed bytes. Yields the header event, then every blob.
 */
export async function* openBundleStream(input: BundleInput, options: OpenBundleOptions = {}): AsyncGenerator<BundleEvent> {
  const { signal } = options;
  const key = options.publicKey === undefined ? undefined : publicKeyFrom(options.publicKey);
  const opened = await openInput(input, signal);
  const withExplain = async <T>(p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (err) {
      throw await explain(err, opened, signal);
    }
  };
  let start: ZstdStart;
  try {
    start = await withExplain(startZstd(opened.compressed, opened.name));
  } catch (err) {
    opened.compressed.destroy();
    throw err;
  }
  // The decoder gets the window the frame declares (zstd's default limit at least), which the
  // header must confirm below: a window above 2^27 only for a bundle that says it was written so.
  const windowLogMax = Math.min(ZSTD_WINDOW_LOG_MAX, Math.max(ZSTD_WINDOW_LOG_LIMIT, start.windowLog));
  // On a thread of its own when there is a second core: the blobs' readers (layers unpacked)
  // then run beside the decoder. With one core the thread would only cost (~10 MB, messages).
  const decoder = availableParallelism() > 1 ? zstdDecompressStreamOnThread : zstdDecompressStream;
  const decompressed = chain(Readable.from(start.chunks, { objectMode: false }), decoder({ windowLogMax, what: opened.name }));
  const tar = new BundleTarReader(decompressed, opened.name);
  try {
    const first = await withExplain(tar.nextEntry());
    if (first === undefined || first.name !== HEADER_ENTRY || first.type !== 'file') {
      throw new FerryError('BUNDLE_INVALID', `${opened.name}: not a ferry bundle: the first entry is ${first === undefined ? 'missing' : `"${first.name}"`}, not ${HEADER_ENTRY}`, {
        hint: 'ferry reads bundles written by ferry export; for other archives use ferry import',
      });
    }
    // Let, to be dropped after the header event: a suspended generator keeps its variables, and
    // the header grows with the images (~2.4 KB each).
    let headerBytes: Buffer | undefined = await withExplain(tar.readBody(MAX_HEADER_BYTES));
    const header = parseHeader(headerBytes, opened.name);
    // Checked before anything but the header was decoded: the window's memory is touched only
    // as output is produced, so a frame that lies about its window costs a few blocks, not GBs.
    if (windowLogMax > ZSTD_WINDOW_LOG_LIMIT && start.windowLog > header.compression.windowLog) {
      throw new FerryError('BUNDLE_INVALID', `${opened.name}: its zstd frame declares a window of 2^${start.windowLog} bytes, but ${HEADER_ENTRY} records window log ${header.compression.windowLog}`, {
        hint: `ferry reads a window above 2^${ZSTD_WINDOW_LOG_LIMIT} only from bundles written with it; this one was not written by ferry export, or was altered`,
      });
    }
    let pending: TarEntry | undefined = await withExplain(tar.nextEntry());
    let signature: Buffer | undefined;
    if (pending?.name === SIGNATURE_ENTRY && pending.type === 'file') {
      signature = await withExplain(tar.readBody(MAX_SIGNATURE_BYTES));
      pending = await withExplain(tar.nextEntry());
    }
    if (key !== undefined) checkSignature(opened, headerBytes, signature, key);
    yield { type: 'header', header, headerBytes, signature, signatureVerified: key !== undefined, location: opened.location };
    headerBytes = undefined;

    // Each listed blob, until it is seen: then marked, not removed, so a second copy is told
    // from a blob the header never listed. One map, the header's own digest strings.
    const expected = new Map<string, BundleBlob | typeof SEEN>(header.blobs.map((b) => [b.digest, b]));
    let sawLayout = false;
    let sawIndex = false;
    for (let entry = pending; entry !== undefined; entry = await withExplain(tar.nextEntry())) {
      if (entry.type === 'directory') {
        if (!/^blobs\/((sha256|sha512)\/)?$/.test(entry.name)) throw unexpected(opened.name, entry.name);
        continue;
      }
      if (entry.name === OCI_LAYOUT_ENTRY || entry.name === INDEX_ENTRY) {
        if (entry.name === OCI_LAYOUT_ENTRY) sawLayout = true;
        else sawIndex = true;
        // Not kept in a variable of this generator: index.json also grows with the images.
        options.onLayoutEntry?.(entry.name, await withExplain(tar.readBody(MAX_HEADER_BYTES)));
        continue;
      }
      const named = digestOfEntryName(entry.name);
      if (named === undefined) throw unexpected(opened.name, entry.name);
      const blob = expected.get(named);
      if (blob === undefined) {
        throw new FerryError('BUNDLE_INVALID', `${opened.name}: blob ${named} is not listed in ${HEADER_ENTRY}`, {
          hint: 'the bundle was altered after it was written; get it again from its source',
        });
      }
      if (blob === SEEN) throw new FerryError('BUNDLE_INVALID', `${opened.name}: blob ${named} appears twice`);
      expected.set(named, SEEN);
      // The header's copy of the digest: whoever keeps it (a copy's bookkeeping) keeps no other.
      const { digest } = blob;
      if (entry.size !== blob.size) {
        throw new FerryError('SIZE_MISMATCH', `${opened.name}: blob ${digest} is ${entry.size} bytes in the tar, ${HEADER_ENTRY} says ${blob.size}`, {
          hint: 'the bundle was altered after it was written; get it again from its source',
        });
      }
      const damaged = (actual: Digest): FerryError =>
        new FerryError('DIGEST_MISMATCH', `${opened.name}: blob ${digest} is damaged: its content hashes to ${actual}`, {
          hint: 'copy the bundle (every volume) again; `ferry verify` names a damaged volume',
        });
      const verified = async function* (): AsyncGenerator<Buffer> {
        const digester = new Digester(digestAlgorithm(digest));
        try {
          for await (const chunk of tar.bodyChunks()) {
            digester.update(chunk);
            yield chunk;
          }
        } catch (err) {
          throw await explain(err, opened, signal);
        }
        const actual = digester.digest();
        if (actual !== digest) throw await explain(damaged(actual), opened, signal);
      };
      /** The stream, once asked for; taken: read (either way), or passed. */
      const body: { stream?: LazyReadable; taken: boolean } = { taken: false };
      const take = (): void => {
        if (body.taken) throw new FerryError('USAGE', `${opened.name}: blob ${digest} read twice, or after the bundle moved on`, { hint: 'this is a bug in ferry: report it' });
        body.taken = true;
      };
      yield {
        type: 'blob',
        digest,
        size: blob.size,
        mediaType: blob.mediaType,
        kind: blob.kind,
        encoding: blob.encoding,
        get stream(): Readable {
          if (body.stream === undefined) {
            take();
            body.stream = markVerified(new LazyReadable(verified), digest);
          }
          return body.stream;
        },
        async bytes(max: number): Promise<Buffer> {
          take();
          const body = await withExplain(tar.readBody(max));
          const actual = digestOf(body, digestAlgorithm(digest));
          if (actual !== digest) throw await explain(damaged(actual), opened, signal);
          return body;
        },
      };
      // Untouched: it is skipped, and must never read later (the tar has moved on). Abandoned
      // midway: wait until it has let go of the tar, then the rest of the body is skipped.
      body.taken = true;
      const { stream } = body;
      if (stream !== undefined && !stream.started) stream.destroy();
      else if (stream?.destroyed === true && !stream.closed) await new Promise<void>((resolve) => stream.once('close', () => resolve()));
    }
    if (!sawLayout || !sawIndex) {
      throw new FerryError('BUNDLE_INVALID', `${opened.name}: no ${sawLayout ? INDEX_ENTRY : OCI_LAYOUT_ENTRY} entry`, {
        hint: 'the bundle was not written by ferry, or was altered',
      });
    }
    const missing = header.blobs.filter((b) => expected.get(b.digest) !== SEEN);
    if (missing.length > 0) {
      throw await explain(
        new FerryError('BUNDLE_INVALID', `${opened.name}: incomplete: ${missing.length} blob(s) listed in ${HEADER_ENTRY} are missing, the first ${missing[0]!.digest}`, {
          hint: opened.location?.kind === 'volumes' ? 'a volume is missing or truncated: copy every volume again' : 'the file is truncated: copy it again',
        }),
        opened,
        signal,
      );
    }
  } finally {
    await tar.close();
  }
}

/** A blob of the header the stream has passed. */
const SEEN = Symbol('seen');

function unexpected(name: string, entry: string): FerryError {
  return new FerryError('BUNDLE_INVALID', `${name}: unexpected tar entry "${entry}"`, {
    hint: 'a ferry bundle holds only ferry-bundle.json, ferry-bundle.sig, oci-layout, index.json and blobs/; refusing it',
  });
}

export interface BundleHeaderInfo {
  header: BundleHeader;
  headerBytes: Buffer;
  signature: Buffer | undefined;
  signatureVerified: boolean;
  /** Undefined when read from stdin. */
  location: BundleLocation | undefined;
  /** Bytes on disk: the file, or every volume together; undefined for stdin. */
  compressedSize: number | undefined;
}

/** Read only the start of a bundle (a path, or `-` for stdin): its header and signature (for ls, and delta planning). */
export async function readBundleHeader(path: string, options: { publicKey?: KeyObject | string; signal?: AbortSignal } = {}): Promise<BundleHeaderInfo> {
  const stream = openBundleStream(path, options);
  try {
    const first = await stream.next();
    if (first.done === true || first.value.type !== 'header') {
      throw new FerryError('BUNDLE_INVALID', `${basename(path)}: no header`);
    }
    const { header, headerBytes, signature, signatureVerified, location } = first.value;
    const compressedSize = location === undefined ? undefined : location.kind === 'file' ? location.size : location.volumes.reduce((s, v) => s + v.size, 0);
    return { header, headerBytes, signature, signatureVerified, location, compressedSize };
  } finally {
    await stream.return(undefined);
  }
}
