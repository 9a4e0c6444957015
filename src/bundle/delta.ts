import { open, readFile } from 'node:fs/promises';
import { FerryError, messageOf } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { ZSTD_MAGIC } from '../io/zstd.js';
import type { BundleHeader } from './format.js';
import { readBundleHeader } from './read-bundle.js';

/**
 * What the target already holds, for a delta bundle: blob digests and layer diffIds. It is a
 * Set of digest strings (what `WriteBundleOptions.exclude` takes), and also remembers the
 * uncompressed size of layers when its source knew them, so a raw delta can describe a layer
 * it leaves out without fetching it.
 */
export class ExcludeSet extends Set<string> {
  readonly tarSizes = new Map<Digest, number>();
}

/** Everything a target that imported this bundle holds: its blobs, its images' layers, what it required. */
export function excludeSetFromHeader(header: BundleHeader): ExcludeSet {
  const set = new ExcludeSet();
  for (const b of header.blobs) set.add(b.digest);
  for (const r of header.requires) {
    set.add(r.digest);
    set.add(r.diffId);
  }
  for (const image of header.images) {
    set.add(image.manifestDigest);
    set.add(image.configDigest);
    for (const l of image.layers) {
      set.add(l.digest);
      set.add(l.diffId);
      if (l.tarSize !== undefined) set.tarSizes.set(l.diffId, l.tarSize);
    }
  }
  return set;
}

function addDigests(set: ExcludeSet, value: unknown, source: string, key: string): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) throw new FerryError('USAGE', `${source}: "${key}" is not a list`);
  for (const item of value) {
    const digest = typeof item === 'string' ? item : typeof item === 'object' && item !== null ? (item as Record<string, unknown>).digest : undefined;
    if (typeof digest !== 'string' || !isDigest(digest)) {
      throw new FerryError('USAGE', `${source}: "${key}" holds ${JSON.stringify(item)}, not a digest`);
    }
    set.add(digest);
    if (typeof item === 'object' && item !== null) {
      const o = item as Record<string, unknown>;
      if (typeof o.diffId === 'string' && isDigest(o.diffId)) {
        set.add(o.diffId);
        if (typeof o.tarSize === 'number' && Number.isSafeInteger(o.tarSize)) set.tarSizes.set(o.diffId, o.tarSize);
      }
    }
  }
}

/** `layers: [{ diffId, tarSize, compressedDigests: [...] }]` as the store's inventory lists unpacked layers. */
function addLayers(set: ExcludeSet, value: unknown, source: string): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) throw new FerryError('USAGE', `${source}: "layers" is not a list`);
  for (const item of value) {
    const o = typeof item === 'object' && item !== null ? (item as Record<string, unknown>) : {};
    if (typeof o.diffId !== 'string' || !isDigest(o.diffId)) {
      throw new FerryError('USAGE', `${source}: "layers" holds ${JSON.stringify(item)}, without a diffId digest`);
    }
    set.add(o.diffId);
    if (typeof o.tarSize === 'number' && Number.isSafeInteger(o.tarSize)) set.tarSizes.set(o.diffId, o.tarSize);
    for (const d of Array.isArray(o.compressedDigests) ? o.compressedDigests : []) {
      if (typeof d === 'string' && isDigest(d)) set.add(d);
    }
  }
}

/**
 * An inventory as `ferry inventory` writes it (src/store/inventory.ts): `blobs` (digests, or
 * objects `{ digest, diffId?, tarSize? }`), optional `diffIds`, and optional `layers`
 * (`{ diffId, tarSize?, compressedDigests? }`). Unknown keys are ignored.
 */
export function excludeSetFromInventory(value: unknown, source: string): ExcludeSet {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FerryError('USAGE', `${source}: an inventory is a JSON object with a "blobs" list`);
  }
  const o = value as Record<string, unknown>;
  if (!Array.isArray(o.blobs)) throw new FerryError('USAGE', `${source}: an inventory needs a "blobs" list of digests`);
  const set = new ExcludeSet();
  addDigests(set, o.blobs, source, 'blobs');
  addDigests(set, o.diffIds, source, 'diffIds');
  addLayers(set, o.layers, source);
  return set;
}

/**
 * The exclude set of `export --since PATH`, where PATH is an old bundle (only its header is
 * read: cheap even for a 20 GB bundle) or an inventory JSON written on the target.
 */
export async function loadExcludeSet(path: string): Promise<ExcludeSet> {
  let first: Buffer;
  try {
    const handle = await open(path, 'r');
    try {
      const buf = Buffer.alloc(4);
      const { bytesRead } = await handle.read(buf, 0, 4, 0);
      first = buf.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new FerryError('IO_ERROR', `read ${path}: ${messageOf(err)}`, { cause: err });
    // Perhaps the base name of volumes: let the bundle reader find them.
    return excludeSetFromHeader((await readBundleHeader(path)).header);
  }
  if (first.equals(ZSTD_MAGIC)) return excludeSetFromHeader((await readBundleHeader(path)).header);
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new FerryError('USAGE', `${path}: neither a bundle nor an inventory JSON: ${messageOf(err)}`, {
      cause: err,
      hint: 'give an old bundle (.tar.zst, or its first volume) or the JSON `ferry inventory` wrote on the target',
    });
  }
  return excludeSetFromInventory(value, path);
}
