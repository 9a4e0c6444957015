import { FerryError } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import { newStringTable, parseSharedJson } from '../oci/shared-json.js';

/**
 * Bundle format v1: the types of `ferry-bundle.json` and the names of the tar entries.
 * bundles/FORMAT.md is the prose version of this file; keep the two in step.
 */

export const BUNDLE_FORMAT = 'ferry-bundle';
export const BUNDLE_FORMAT_VERSION = 1;

export const HEADER_ENTRY = 'ferry-bundle.json';
export const SIGNATURE_ENTRY = 'ferry-bundle.sig';
export const OCI_LAYOUT_ENTRY = 'oci-layout';
export const INDEX_ENTRY = 'index.json';
export const BLOBS_DIR = 'blobs/';
export const BLOBS_SHA256_DIR = 'blobs/sha256/';
export const OCI_LAYOUT_CONTENT = '{"imageLayoutVersion":"1.0.0"}';

/** Annotations every index.json entry carries, so skopeo, umoci and containerd all find the image. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';

/** The header is buffered to be parsed and signed; a bigger one is not a bundle ferry wrote. */
export const MAX_HEADER_BYTES = 64 * 1024 * 1024;
/** An ed25519 signature is 64 bytes; leave room for future schemes without buffering garbage. */
export const MAX_SIGNATURE_BYTES = 4096;

/** The default window log: the largest window plain `zstd -d` and `tar --zstd -xf` accept. */
export const PLAIN_ZSTD_MAX_WINDOW_LOG = 27;

export type LayerEncoding = 'raw' | 'as-pulled';

/**
 * How a blob's bytes relate to what the image's source distributed:
 * `as-pulled` byte for byte; `raw` an uncompressed layer tar named by its diffId;
 * `rewritten` a manifest ferry wrote so the layout points at raw layers.
 */
export type BlobEncoding = 'as-pulled' | 'raw' | 'rewritten';
export type BlobKind = 'manifest' | 'config' | 'layer';

export interface BundleBlob {
  digest: Digest;
  size: number;
  mediaType: string;
  kind: BlobKind;
  encoding: BlobEncoding;
}

export interface BundleImageLayer {
  /** The layer as the original manifest lists it. */
  digest: Digest;
  size: number;
  mediaType: string;
  diffId: Digest;
  /** Size of the uncompressed tar; present for raw bundles. */
  tarSize?: number;
  /** The blob in this bundle (or in `requires`) that holds the layer: diffId when raw, digest when as-pulled. */
  blob: Digest;
}

/**
 * The multi-platform index an image was resolved from (optional, added within version 1): its
 * bytes travel as a blob (kind `manifest`, encoding `as-pulled`), so an importer can record it and
 * a push can send it byte for byte when every platform it lists is in the bundle.
 */
export interface BundleIndexRef {
  digest: Digest;
  mediaType: string;
  size: number;
}

export interface BundleImage {
  /** Full normalised reference, e.g. docker.io/library/redis:7. */
  ref: string;
  platform: Platform;
  /** The original manifest: the image's identity, carried byte for byte. */
  manifestDigest: Digest;
  manifestMediaType: string;
  manifestSize: number;
  configDigest: Digest;
  configSize: number;
  /** The manifest index.json points at: the rewritten one when raw, else the original. */
  layoutManifestDigest: Digest;
  layoutManifestSize: number;
  layers: BundleImageLayer[];
  /** Bytes of the image as distributed: manifest, config and layers. */
  size: number;
  /** The index the image came from, when it came from one (absent in bundles of older ferries). */
  index?: BundleIndexRef;
}

/** A layer a delta bundle leaves out: the target must already hold it (by digest or diffId). */
export interface BundleRequirement {
  digest: Digest;
  diffId: Digest;
  size: number;
  mediaType: string;
}

export interface BundleCompression {
  algorithm: 'zstd';
  level: number;
  windowLog: number;
  longDistanceMatching: boolean;
  /** Bytes a decoder needs for the window: what `ferry ls` reports as the memory to decompress. */
  decodeMemory: number;
}

export interface BundleTotals {
  images: number;
  blobs: number;
  /** Sum of the sizes of the blobs in this bundle (uncompressed tar content). */
  blobBytes: number;
  /** Sum of the sizes of the layer blobs in this bundle. */
  layerBytes: number;
  /** Unique manifests, configs and layers as the sources distribute them (a registry pull). */
  pulledBytes: number;
  requires: number;
  /** Sum of the sizes (as distributed) of the layers a delta requires. */
  requiredBytes: number;
}

/**
 * A file carried beside the bundle (optional, added within version 1): `export --with-ferry`
 * puts the ferry executable next to the volumes, so one medium holds the images and the tool that
 * loads them. Listed here, its hash is covered by the signature; `ferry verify` checks it.
 */
export interface BundleTool {
  /** A plain file name in the bundle's directory, e.g. ferry-linux-x64. */
  file: string;
  size: number;
  /** Hex sha256 of the file. */
  sha256: string;
  /** linux-x64, linux-arm64 */
  platform: string;
}

/** What a carried file may be called: a plain name, never a path or a hidden file. */
export function isToolFileName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(name) && !name.includes('..');
}

export interface BundleHeader {
  format: typeof BUNDLE_FORMAT;
  formatVersion: typeof BUNDLE_FORMAT_VERSION;
  ferryVersion: string;
  created: string;
  layers: LayerEncoding;
  compression: BundleCompression;
  images: BundleImage[];
  blobs: BundleBlob[];
  requires: BundleRequirement[];
  totals: BundleTotals;
  /** Files carried beside the bundle (absent when none). */
  tools?: BundleTool[];
}

/** The tar entry name of a blob: blobs/sha256/<hex>. */
export function blobEntryName(digest: Digest): string {
  const colon = digest.indexOf(':');
  return `blobs/${digest.slice(0, colon)}/${digest.slice(colon + 1)}`;
}

/** The digest a blob entry name stands for, or undefined when the name is not a blob path. */
export function digestOfEntryName(name: string): Digest | undefined {
  const m = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/.exec(name);
  if (!m) return undefined;
  const digest = `${m[1]}:${m[2]}`;
  return isDigest(digest) ? digest : undefined;
}

/** Serialise a header: these exact bytes are the tar entry, and what a signature covers. */
export function serializeHeader(header: BundleHeader): Buffer {
  return Buffer.from(`${JSON.stringify(header, null, 2)}\n`, 'utf8');
}

/** The pieces of serializeHeader's bytes are made in, at least this long each (the last may be shorter). */
const HEADER_PIECE_BYTES = 64 * 1024;

/**
 * serializeHeader's exact bytes in pieces of about 64 KiB, each array of the header written an
 * element at a time: a writer streams the header without the whole of it in memory at once (a
 * 4 MB string and a 4 MB buffer at 1600 images, made just as the compressor starts). Same output
 * as JSON.stringify(header, null, 2): an element is stringified alone and indented two levels,
 * which is safe because JSON text has no raw newline inside a string.
 */
export function* headerPieces(header: BundleHeader): Generator<Buffer> {
  let pending: string[] = [];
  let length = 0;
  function* add(text: string): Generator<Buffer> {
    pending.push(text);
    length += text.length;
    if (length < HEADER_PIECE_BYTES) return;
    yield Buffer.from(pending.join(''), 'utf8');
    pending = [];
    length = 0;
  }
  const indented = (value: unknown, indent: string): string => JSON.stringify(value, null, 2).replaceAll('\n', `\n${indent}`);
  let first = true;
  for (const [key, value] of Object.entries(header)) {
    // An absent optional field (tools), which JSON.stringify leaves out.
    if (value === undefined) continue;
    yield* add(`${first ? '{' : ','}\n  ${JSON.stringify(key)}: `);
    first = false;
    if (!Array.isArray(value) || value.length === 0) {
      yield* add(indented(value, '  '));
      continue;
    }
    // The header's arrays hold records (objects), each stringified alone.
    for (let i = 0; i < value.length; i++) yield* add(`${i === 0 ? '[' : ','}\n    ${indented(value[i], '    ')}`);
    yield* add('\n  ]');
  }
  yield* add(first ? '{}\n' : '\n}\n');
  if (pending.length > 0) yield Buffer.from(pending.join(''), 'utf8');
}

function invalid(source: string, why: string): FerryError {
  return new FerryError('BUNDLE_INVALID', `${source}: invalid ${HEADER_ENTRY}: ${why}`, {
    hint: 'the bundle is damaged or was not written by ferry; copy it again or export it again',
  });
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks run per field of every image: the message is made only when one fails. */
function need<T>(ok: boolean, value: T, source: string, why: string | (() => string)): T {
  if (!ok) throw invalid(source, typeof why === 'string' ? why : why());
  return value;
}

function digestField(o: Json, key: string, source: string, where: string): Digest {
  const v = o[key];
  return need(typeof v === 'string' && isDigest(v), v as Digest, source, () => `${where}.${key} is not a digest`);
}

function sizeField(o: Json, key: string, source: string, where: string): number {
  const v = o[key];
  return need(typeof v === 'number' && Number.isSafeInteger(v) && v >= 0, v as number, source, () => `${where}.${key} is not a size`);
}

function stringField(o: Json, key: string, source: string, where: string): string {
  const v = o[key];
  return need(typeof v === 'string', v as string, source, () => `${where}.${key} is not a string`);
}

function arrayField(o: Json, key: string, source: string, where: string): unknown[] {
  const v = o[key];
  return need(Array.isArray(v), v as unknown[], source, () => `${where}.${key} is not a list`);
}

function objectAt(v: unknown, source: string, where: string): Json {
  return need(isObject(v), v as Json, source, () => `${where} is not an object`);
}

/**
 * Parse and validate header bytes from an untrusted bundle. `source` names the bundle in errors.
 * Unknown fields are tolerated (a later minor addition); a different formatVersion is refused.
 */
export function parseHeader(bytes: Buffer, source: string): BundleHeader {
  let value: unknown;
  try {
    // Its own table: its digests repeat within it (every image lists the shared base), and the
    // process's table would keep every string of a header that ls or a delta reads and drops.
    value = parseSharedJson(bytes.toString('utf8'), newStringTable());
  } catch (err) {
    throw new FerryError('BUNDLE_INVALID', `${source}: invalid ${HEADER_ENTRY}: not valid JSON`, { cause: err });
  }
  const h = objectAt(value, source, 'header');
  if (h.format !== BUNDLE_FORMAT) throw invalid(source, `format is ${JSON.stringify(h.format)}, not "${BUNDLE_FORMAT}"`);
  if (h.formatVersion !== BUNDLE_FORMAT_VERSION) {
    throw new FerryError('UNSUPPORTED', `${source}: bundle format version ${String(h.formatVersion)} is not supported (this ferry reads version ${BUNDLE_FORMAT_VERSION})`, {
      hint: 'use the ferry version that wrote the bundle (see "ferryVersion" in its ferry-bundle.json), or a newer one',
    });
  }
  stringField(h, 'ferryVersion', source, 'header');
  stringField(h, 'created', source, 'header');
  need(h.layers === 'raw' || h.layers === 'as-pulled', null, source, 'layers is neither "raw" nor "as-pulled"');
  const c = objectAt(h.compression, source, 'compression');
  need(c.algorithm === 'zstd', null, source, 'compression.algorithm is not "zstd"');
  sizeField(c, 'level', source, 'compression');
  sizeField(c, 'windowLog', source, 'compression');
  sizeField(c, 'decodeMemory', source, 'compression');

  const blobs = arrayField(h, 'blobs', source, 'header');
  const seen = new Set<string>();
  blobs.forEach((b, i) => {
    const where = `blobs[${i}]`;
    const o = objectAt(b, source, where);
    const d = digestField(o, 'digest', source, where);
    need(!seen.has(d), null, source, () => `blob ${d} is listed twice`);
    seen.add(d);
    sizeField(o, 'size', source, where);
    stringField(o, 'mediaType', source, where);
    need(o.kind === 'manifest' || o.kind === 'config' || o.kind === 'layer', null, source, () => `${where}.kind is unknown`);
    need(o.encoding === 'as-pulled' || o.encoding === 'raw' || o.encoding === 'rewritten', null, source, () => `${where}.encoding is unknown`);
  });
  arrayField(h, 'requires', source, 'header').forEach((r, i) => {
    const o = objectAt(r, source, `requires[${i}]`);
    digestField(o, 'digest', source, `requires[${i}]`);
    digestField(o, 'diffId', source, `requires[${i}]`);
    sizeField(o, 'size', source, `requires[${i}]`);
  });
  arrayField(h, 'images', source, 'header').forEach((m, i) => {
    const o = objectAt(m, source, `images[${i}]`);
    const where = `images[${i}]`;
    stringField(o, 'ref', source, where);
    const p = objectAt(o.platform, source, `${where}.platform`);
    stringField(p, 'os', source, `${where}.platform`);
    stringField(p, 'architecture', source, `${where}.platform`);
    digestField(o, 'manifestDigest', source, where);
    digestField(o, 'configDigest', source, where);
    digestField(o, 'layoutManifestDigest', source, where);
    arrayField(o, 'layers', source, where).forEach((l, j) => {
      const at = `${where}.layers[${j}]`;
      const lo = objectAt(l, source, at);
      digestField(lo, 'digest', source, at);
      digestField(lo, 'diffId', source, at);
      digestField(lo, 'blob', source, at);
      sizeField(lo, 'size', source, at);
    });
    if (o.index !== undefined) {
      const x = objectAt(o.index, source, `${where}.index`);
      const d = digestField(x, 'digest', source, `${where}.index`);
      stringField(x, 'mediaType', source, `${where}.index`);
      sizeField(x, 'size', source, `${where}.index`);
      need(seen.has(d), null, source, `${where}.index ${d} is not among the blobs`);
    }
  });
  objectAt(h.totals, source, 'totals');
  if (h.tools !== undefined) {
    arrayField(h, 'tools', source, 'header').forEach((t, i) => {
      const o = objectAt(t, source, `tools[${i}]`);
      const file = stringField(o, 'file', source, `tools[${i}]`);
      // verify reads this name beside the bundle: it must not reach anywhere else.
      need(isToolFileName(file), null, source, `tools[${i}].file is not a plain file name`);
      sizeField(o, 'size', source, `tools[${i}]`);
      const sha = stringField(o, 'sha256', source, `tools[${i}]`);
      need(/^[a-f0-9]{64}$/.test(sha), null, source, `tools[${i}].sha256 is not a sha256`);
      stringField(o, 'platform', source, `tools[${i}]`);
    });
  }
  return h as unknown as BundleHeader;
}
