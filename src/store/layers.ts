import { mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { lstat, readFile, readdir, rename, rm } from '../io/fs-promises.js';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError, isFerryError, messageOf } from '../errors.js';
import { digestHex, isDigest, type Digest } from '../oci/digest.js';
import { syncDir, writeFileAtomic } from '../io/atomic-file.js';
import { nodeStream, nodeStreamPromises } from '../io/builtins.js';
import { digestOfBuffer, nativeFs } from '../io/native.js';
import type { StoreLock } from './lock.js';
import { ownedName } from './owner.js';
import { isNoSpace, noSpaceError } from './space.js';
import type { unpackLayerTar } from './unpack.js';
import { isoTime } from '../io/iso-time.js';

/** A layer's tar-split (see tar-split.ts), beside its diff/. */
export const TAR_SPLIT_FILE = 'tar-split.zst';

/**
 * Unpacked layers, one directory per layer stack position: `layers/<chainId hex>/` with `diff/`
 * (overlay form) and `meta.json`. Keyed by chainId, not diffId, because a layer's unpacked form
 * depends on the layers below it (directories the tar only implies take their metadata from
 * them). `l/<short>` are short symlinks to `diff/`, so a long lowerdir list fits a mount option.
 */
export interface LayerMeta {
  schemaVersion: 1;
  chainId: Digest;
  diffId: Digest;
  /** chainId of the layer below, null for a base layer. */
  parent: Digest | null;
  /** Bytes of the uncompressed tar. */
  size: number;
  /** Digests of compressed blobs this layer was seen as (for push/serve and inventory). */
  compressedDigests: Digest[];
  /** The short link name under l/. */
  link: string;
  created: string;
  /**
   * 'kept': `tar-split.zst` gives back the original tar from diff/ (see tar-split.ts);
   * 'not-reproducible': the tar's bodies are not all in diff/ (`tarSplitWhy` says why).
   * Absent on layers unpacked before tar-split existed.
   */
  tarSplit?: 'kept' | 'not-reproducible';
  tarSplitWhy?: string;
}

/** OCI image spec: ChainID(L0) = DiffID(L0); ChainID(L0|...|Ln) = sha256(ChainID(n-1) + " " + DiffID(n)). */
export function chainIdOf(parent: Digest | undefined | null, diffId: Digest): Digest {
  if (parent === undefined || parent === null) return diffId;
  return digestOfBuffer(Buffer.from(`${parent} ${diffId}`), 'sha256');
}

/** The chainIds of every layer of an image, bottom first. */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  let parent: Digest | undefined;
  for (const diffId of diffIds) {
    parent = chainIdOf(parent, diffId);
    out.push(parent);
  }
  return out;
}

/** 26 characters, as moby's overlay2 uses, so 128 layers fit a 4 KB mount option page. */
export const SHORT_LINK_LENGTH = 26;

export function shortLinkOf(chainId: Digest): string {
  return digestHex(chainId).slice(0, SHORT_LINK_LENGTH).toUpperCase();
}

export interface UnpackLayerOptions {
  /** Names the layer in errors and warnings. */
  what?: string;
  onWarning?: (message: string) => void;
  /** Progress: bytes of tar read so far, chunk by chunk. */
  onBytes?: (bytes: number) => void;
  rootless?: boolean;
  /** The compressed blob this layer came as: recorded in its meta.json from the start (see addCompressedDigest). */
  compressedDigest?: Digest;
}

export interface UnpackLayerResult {
  chainId: Digest;
  diffId: Digest;
  /** Bytes of tar read (0 when skipped before reading). */
  size: number;
  /** True when the layer was present already (or another process committed it first). */
  skipped: boolean;
  warnings: string[];
}

function parseMeta(text: string, where: string): LayerMeta {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new FerryError('STORE_ERROR', `${where}: not valid JSON`, { cause: err, hint: 'run ferry fsck --repair' });
  }
  const m = v as Partial<LayerMeta>;
  if (
    typeof m !== 'object' || m === null || m.schemaVersion !== 1 || typeof m.chainId !== 'string' || !isDigest(m.chainId) ||
    typeof m.diffId !== 'string' || !isDigest(m.diffId) || (m.parent !== null && (typeof m.parent !== 'string' || !isDigest(m.parent))) ||
    typeof m.size !== 'number' || !Array.isArray(m.compressedDigests) || typeof m.link !== 'string'
  ) {
    throw new FerryError('STORE_ERROR', `${where}: not a layer record`, { hint: 'run ferry fsck --repair' });
  }
  return m as LayerMeta;
}

export class LayerStore {
  readonly dir: string;
  readonly linkDir: string;
  private readonly tmpDir: string;
  private readonly lock: StoreLock;
  /**
   * While > 0 (an import holds a lease, see Store.lease), a committed layer's files are durable
   * (the syncfs before its rename) but the fsyncs of layers/ and l/ that make its rename and link
   * durable are made once by syncPending, before any ref names it, instead of once per layer.
   */
  deferDirSyncs = 0;
  private readonly unsyncedDirs = new Set<string>();
  /** layers/ and l/ exist (made once per process, not once per layer). */
  private dirsMade = false;

  constructor(root: string, lock: StoreLock) {
    this.dir = join(root, 'layers');
    this.linkDir = join(root, 'l');
    this.tmpDir = join(root, 'tmp');
    this.lock = lock;
  }

  layerDir(chainId: Digest): string {
    return join(this.dir, digestHex(chainId));
  }

  diffDir(chainId: Digest): string {
    return join(this.layerDir(chainId), 'diff');
  }

  tarSplitPath(chainId: Digest): string {
    return join(this.layerDir(chainId), TAR_SPLIT_FILE);
  }

  /**
   * The layer's original tar, reproduced from its tar-split and diff/ (unverified: callers check
   * it against the diffId while streaming, as layerFromTar does); undefined when the layer has no split.
   */
  async openTar(chainId: Digest, what: string): Promise<(() => Readable) | undefined> {
    const meta = await this.meta(chainId);
    if (meta?.tarSplit !== 'kept') return undefined;
    // Loaded when the tar is read, as unpack.js below: `run` opens the image (and so this) but
    // never reads a layer's tar, and starts without tar-split and zstd.
    return () => {
      const out = new (nodeStream().PassThrough)();
      import('./tar-split.js')
        .then(({ reproduceLayerTar }) => nodeStreamPromises().pipeline(reproduceLayerTar(this.tarSplitPath(chainId), this.diffDir(chainId), what), out))
        .catch((err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err))));
      return out;
    };
  }

  /**
   * The layer's record, or undefined when it is not (completely) in the store. Read synchronously,
   * as the store's other short metadata calls below: a few hundred bytes, where the thread-pool
   * round trips of an async read (open, stat, read, close) cost more than the read itself and
   * added up to milliseconds per layer on a busy machine.
   */
  async meta(chainId: Digest): Promise<LayerMeta | undefined> {
    const path = join(this.layerDir(chainId), 'meta.json');
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    return parseMeta(text, path);
  }

  async has(chainId: Digest): Promise<boolean> {
    return (await this.meta(chainId)) !== undefined;
  }

  /** Diff dirs of `chainId` and every layer below it, top first. */
  async lowerDirs(chainId: Digest | undefined): Promise<string[]> {
    const out: string[] = [];
    let cur = chainId;
    while (cur !== undefined) {
      const meta = await this.meta(cur);
      if (meta === undefined) {
        throw new FerryError('STORE_ERROR', `layer ${cur} is not in the store`, { hint: 'import its image again; ferry fsck lists what is missing' });
      }
      out.push(this.diffDir(cur));
      cur = meta.parent ?? undefined;
    }
    return out;
  }

  /**
   * Unpack a layer tar on top of `parentChainId` (undefined for a base layer): staged in tmp/,
   * its diffId computed and compared with `expectedDiffId` BEFORE the rename into layers/.
   * Present already: the stream is drained, nothing is written.
   */
  async unpack(tar: Readable, expectedDiffId: Digest, parentChainId: Digest | undefined, options: UnpackLayerOptions = {}): Promise<UnpackLayerResult> {
    const chainId = chainIdOf(parentChainId, expectedDiffId);
    const what = options.what ?? `layer ${expectedDiffId}`;
    if (await this.has(chainId)) {
      tar.resume();
      await nodeStreamPromises().finished(tar);
      return { chainId, diffId: expectedDiffId, size: 0, skipped: true, warnings: [] };
    }
    const lowerDirs = await this.lowerDirs(parentChainId);
    const staging = join(this.tmpDir, ownedName('layer'));
    try {
      mkdirSync(staging, { mode: 0o700 });
      const diff = join(staging, 'diff');
      mkdirSync(diff, { mode: 0o755 });
      const unpackOptions: Parameters<typeof unpackLayerTar>[2] = { what, lowerDirs, tarSplit: join(staging, TAR_SPLIT_FILE) };
      if (options.onWarning) unpackOptions.onWarning = options.onWarning;
      if (options.onBytes) unpackOptions.onBytes = options.onBytes;
      if (options.rootless !== undefined) unpackOptions.rootless = options.rootless;
      // A stream that verifies itself against this diffId (the bundle's, marked by its reader) is
      // not hashed a second time; it fails at its end, which the unpack reads before returning.
      const [{ verifiedDigest }, { unpackLayerTar: unpack }] = await Promise.all([import('../io/verify-digest.js'), import('./unpack.js')]);
      if (verifiedDigest(tar) === expectedDiffId) unpackOptions.verifiedDiffId = expectedDiffId;
      const result = await unpack(tar, diff, unpackOptions);
      if (result.diffId !== expectedDiffId) {
        throw new FerryError('DIGEST_MISMATCH', `${what}: the layer tar hashes to ${result.diffId}, not its diffId ${expectedDiffId}`, {
          hint: 'the layer data is corrupt or does not belong to this image; nothing was kept',
        });
      }
      const meta: LayerMeta = {
        schemaVersion: 1,
        chainId,
        diffId: expectedDiffId,
        parent: parentChainId ?? null,
        size: result.size,
        compressedDigests: options.compressedDigest === undefined || options.compressedDigest === expectedDiffId ? [] : [options.compressedDigest],
        link: shortLinkOf(chainId),
        created: isoTime(),
      };
      if (result.tarSplit?.kept === true) meta.tarSplit = 'kept';
      else if (result.tarSplit !== undefined) {
        meta.tarSplit = 'not-reproducible';
        meta.tarSplitWhy = result.tarSplit.why;
      }
      // A plain write: staging is private until the rename, and the syncfs covers meta.json too.
      writeFileSync(join(staging, 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o644 });
      // One syncfs for the whole layer instead of an fsync per file. Per layer, before the rename:
      // a layer in layers/ with its meta.json is found present by every later import (this one's
      // or another process's) and never written again, so its files must be durable before it is
      // visible. Renaming first and syncing a batch later lets a power loss keep a present layer
      // with empty files; staging the renames for a batch made two importers of one layer both
      // report it unpacked (6f74a14). kill -9 tests neither: the page cache survives it.
      nativeFs().syncfs(staging);
      const skipped = await this.commit(staging, chainId, meta.link);
      return { chainId, diffId: expectedDiffId, size: result.size, skipped, warnings: result.warnings };
    } catch (err) {
      tar.destroy();
      await rm(staging, { recursive: true, force: true });
      if (isNoSpace(err)) throw noSpaceError(`store ${what}`, this.dir, err);
      if (isFerryError(err)) throw err;
      throw new FerryError('IO_ERROR', `store ${what}: ${messageOf(err)}`, { cause: err });
    }
  }

  /** Rename a complete staging dir into layers/; true when the layer was there already. */
  private async commit(staging: string, chainId: Digest, link: string): Promise<boolean> {
    return this.lock.with(async () => {
      if (await this.has(chainId)) {
        await rm(staging, { recursive: true, force: true });
        return true;
      }
      const target = this.layerDir(chainId);
      this.makeDirs();
      try {
        renameSync(staging, target);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw err;
        // A directory without meta.json (or anything else by that name) is a leftover (fsck would report it): replace it.
        rmSync(target, { recursive: true, force: true });
        renameSync(staging, target);
      }
      await this.syncDirOrDefer(this.dir);
      await this.ensureLink(chainId, link);
      return false;
    });
  }

  private makeDirs(): void {
    if (this.dirsMade) return;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    mkdirSync(this.linkDir, { recursive: true, mode: 0o700 });
    this.dirsMade = true;
  }

  /** l/<short> -> ../layers/<hex>/diff (idempotent). */
  async ensureLink(chainId: Digest, link: string): Promise<void> {
    this.makeDirs();
    const path = join(this.linkDir, link);
    const want = join('..', 'layers', digestHex(chainId), 'diff');
    try {
      symlinkSync(want, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const have = readlinkSync(path);
      if (have === want) return;
      throw new FerryError('STORE_ERROR', `layer link l/${link} points to ${have}, expected ${want}`, { hint: 'run ferry fsck --repair' });
    }
    await this.syncDirOrDefer(this.linkDir);
  }

  private async syncDirOrDefer(dir: string): Promise<void> {
    if (this.deferDirSyncs > 0) this.unsyncedDirs.add(dir);
    else await syncDir(dir);
  }

  /** The directory fsyncs deferred so far (see deferDirSyncs). */
  async syncPending(): Promise<void> {
    for (const dir of [...this.unsyncedDirs]) {
      await syncDir(dir);
      this.unsyncedDirs.delete(dir);
    }
  }

  /** Remember that this layer was also distributed as the compressed blob `digest`. */
  async addCompressedDigest(chainId: Digest, digest: Digest): Promise<void> {
    const known = await this.meta(chainId);
    if (known === undefined || digest === known.diffId || known.compressedDigests.includes(digest)) return;
    await this.lock.with(async () => {
      const meta = await this.meta(chainId);
      if (meta === undefined || meta.compressedDigests.includes(digest)) return;
      meta.compressedDigests = [...meta.compressedDigests, digest].sort();
      // Via tmp/: a crash mid-write leaves a leftover the next open sweeps, not litter in the layer.
      await writeFileAtomic(join(this.layerDir(chainId), 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`, 0o644, join(this.tmpDir, ownedName('meta')));
    });
  }

  /** The layer's tar-split is lost (fsck --repair): record that its tar cannot be given back. */
  async markNotReproducible(chainId: Digest, why: string): Promise<void> {
    await this.lock.with(async () => {
      const meta = await this.meta(chainId);
      if (meta === undefined) return;
      meta.tarSplit = 'not-reproducible';
      meta.tarSplitWhy = why;
      await writeFileAtomic(join(this.layerDir(chainId), 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`, 0o644, join(this.tmpDir, ownedName('meta')));
    });
  }

  /** Directory names under layers/ (chainId hex), complete or not. */
  async ids(): Promise<string[]> {
    try {
      return readdirSync(this.dir).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  /** Every complete layer's record. */
  async list(): Promise<LayerMeta[]> {
    const out: LayerMeta[] = [];
    for (const hex of await this.ids()) {
      const chainId = `sha256:${hex}`;
      if (!isDigest(chainId)) continue;
      const meta = await this.meta(chainId).catch((err: unknown) => {
        if (isFerryError(err, 'STORE_ERROR')) return undefined;
        throw err;
      });
      if (meta !== undefined) out.push(meta);
    }
    return out;
  }

  /**
   * Take a layer out of layers/ (callers hold the lock and know it is unreferenced): renamed
   * into tmp/ so it vanishes at once, its l/ link removed. Returns the trash path to dispose of
   * after the lock is released (deleting a big tree must not hold up other ferry processes), or
   * undefined when the layer was not there.
   */
  async detachUnlocked(hex: string): Promise<string | undefined> {
    const dir = join(this.dir, hex);
    // A half-written or corrupt record still names its link; a missing one means no link was made.
    const meta = await readFile(join(dir, 'meta.json'), 'utf8').then(
      (t) => parseMeta(t, dir),
      (err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      },
    ).catch((err: unknown) => {
      if (isFerryError(err, 'STORE_ERROR')) return undefined;
      throw err;
    });
    const trash = join(this.tmpDir, ownedName('trash'));
    try {
      await rename(dir, trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    await syncDir(this.dir);
    if (meta !== undefined) await rm(join(this.linkDir, meta.link), { force: true });
    return trash;
  }

  /** Delete a detached layer; returns the bytes it took. */
  async dispose(trash: string | undefined): Promise<number> {
    if (trash === undefined) return 0;
    const bytes = await diskUsage(trash);
    await rm(trash, { recursive: true, force: true });
    return bytes;
  }
}

/** Bytes a tree takes (file sizes, not blocks), never following links. */
export async function diskUsage(path: string | Buffer): Promise<number> {
  const st = await lstat(path);
  if (!st.isDirectory()) return st.size;
  let total = st.size;
  // Buffer names: layer files may have names that are not UTF-8.
  const base = typeof path === 'string' ? Buffer.from(path) : path;
  for (const name of await readdir(base, { encoding: 'buffer' })) {
    total += await diskUsage(Buffer.concat([base, Buffer.from('/'), name]));
  }
  return total;
}
